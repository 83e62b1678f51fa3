#!/usr/bin/env python3
"""A stand-in for the k3s server in nodeagent's tests.

The test serves a small shell script as "the k3s binary"; `k3s server` runs this program with
the stand-in's version and behaviour. Like K3s it writes the kubeconfig (mode 0600) and, when
it is a "good" release, registers the node named in config.yaml as Ready at its version,
through the test API server (server-side apply as field manager "k3s"), and renews the node's
Lease every 2 seconds as a kubelet does. A "bad" release never reports Ready. Either runs until
SIGTERM.

usage: standin.py VERSION good|bad ROOT KUBECONFIG API_URL TOKEN DEFAULT_NODE_NAME
"""
import datetime
import json
import os
import signal
import ssl
import sys
import time
import urllib.request


def node_name(root, default):
    try:
        with open(root + "/etc/rancher/k3s/config.yaml") as f:
            for line in f:
                if line.startswith("node-name:"):
                    return line.split(":", 1)[1].strip().strip('"')
    except FileNotFoundError:
        pass
    return default


def apply(api, token, path, body):
    request = urllib.request.Request(
        f"{api}{path}?fieldManager=k3s&force=true", data=json.dumps(body).encode(), method="PATCH",
        headers={"Content-Type": "application/apply-patch+yaml", "Authorization": f"Bearer {token}"})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return response.status


def main():
    version, mode, root, kubeconfig, api, token, default_name = sys.argv[1:8]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    directory = root + "/etc/rancher/k3s"
    os.makedirs(directory, exist_ok=True)
    with open(kubeconfig, "rb") as f:
        data = f.read()
    temp = directory + "/.k3s.yaml.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    os.rename(temp, directory + "/k3s.yaml")
    print(f"stand-in k3s {version} ({mode}) started", flush=True)
    name = node_name(root, default_name)
    if mode == "good":
        status = apply(api, token, f"/api/v1/nodes/{name}", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": version}},
        })
        print(f"node {name} Ready at {version}: HTTP {status}", flush=True)
    while True:
        if mode == "good":
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            apply(api, token, f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            })
        time.sleep(2)


if __name__ == "__main__":
    main()
