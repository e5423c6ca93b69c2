module sidecar-injector.test/control-plane/egress-proxy

go 1.26.0
