module sidecar-injector.test/control-plane/network

go 1.26.0
