#!/usr/bin/env bash
# What of the host the end-to-end cluster must leave as it found it, as text to compare:
# sysctls (less the kernel's own counters), interfaces and addresses, routes, firewall rules,
# mounts, network namespaces, and the node's cgroups. scripts/e2e.sh takes it before the
# cluster starts and after it stops, and fails on any difference.
set -uo pipefail
echo "# sysctl"
sysctl -a 2>/dev/null | grep -Ev '^(fs\.(dentry-state|file-nr|inode-nr|inode-state|quota\.)|kernel\.(ns_last_pid|random\.)|net\.netfilter\.nf_conntrack_count)' | sort
echo "# links"
ip -o link show | sed 's/^[0-9]*: //' | sort
echo "# addresses"
ip -o addr show | sed 's/^[0-9]*: //; s/valid_lft.*//' | sort
echo "# routes"
ip route show table all | sort
echo "# iptables"
iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'
echo "# nftables"
nft list ruleset 2>/dev/null
echo "# mounts"
findmnt -rn -o TARGET,SOURCE,FSTYPE | sort
echo "# network namespaces"
ip netns list 2>/dev/null | sort
echo "# node cgroups"
ls -d /sys/fs/cgroup/*/sidecar-injector-node 2>/dev/null || true
