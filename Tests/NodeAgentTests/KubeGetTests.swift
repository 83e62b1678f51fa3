import Foundation
import Testing
import TestSupport
import KubeTestServer
import Reconcilers
import YAML

@Suite("nodeagent kube get (the real binary against the test API server)", .serialized)
struct KubeGetTests {
    @Test func getsListsAndExplains() async throws {
        let s = try await KubeTestServer()
        let dir = Fixtures.temporaryDirectory()
        defer {
            s.stop()
            try? FileManager.default.removeItem(atPath: dir)
        }
        try s.writeKubeconfig(to: dir + "/k3s.yaml")
        s.put(KubeTestServer.builtIn[3], .object([
            "apiVersion": .string("v1"), "kind": .string("Node"),
            "metadata": .object(["name": .string("vps-1"), "creationTimestamp": .string("2026-11-26T10:00:00Z")]),
            "status": .object(["conditions": .array([.object(["type": .string("Ready"), "status": .string("True")])])]),
        ]))
        s.put(KubeTestServer.builtIn[1], namespace: "apps", .object([
            "apiVersion": .string("v1"), "kind": .string("ConfigMap"),
            "metadata": .object(["name": .string("settings"), "namespace": .string("apps")]), "data": .object(["mode": .string("prod")]),
        ]))
        let k = ["--kubeconfig", dir + "/k3s.yaml"]
        let nodes = try await Binary.run(["kube", "get", "nodes"] + k)
        #expect(nodes.exitCode == 0, "\(nodes.stderr)")
        #expect(nodes.stdout == "NAME    STATUS   CREATED\nvps-1   Ready    2026-11-26T10:00:00Z\n")
        let one = try await Binary.run(["kube", "get", "configmap", "settings", "-n", "apps", "-o", "json"] + k)
        #expect(JSONValue.parse(Array(one.stdout.utf8))?["data"]?["mode"]?.string == "prod")
        let all = try await Binary.run(["kube", "get", "cm", "-A"] + k)
        #expect(all.exitCode == 1, "cm is no name this server knows")
        let everywhere = try await Binary.run(["kube", "get", "ConfigMap", "-A"] + k)
        #expect(everywhere.stdout.hasPrefix("NAMESPACE   NAME       CREATED\napps        settings"))
        let missing = try await Binary.run(["kube", "get", "configmap", "nope", "-n", "apps"] + k)
        #expect(missing.exitCode == 1)
        #expect(missing.stderr.contains("Error from server (NotFound): configmaps \"nope\" not found"))
        let unknown = try await Binary.run(["kube", "get", "helmcharts"] + k)
        #expect(unknown.stderr.contains("the server has no resource type \"helmcharts\""))
        s.register(.init(group: "helm.cattle.io", version: "v1", kind: "HelmChart", plural: "helmcharts", namespaced: true))
        let known = try await Binary.run(["kube", "get", "helmcharts.helm.cattle.io", "-n", "kube-system"] + k)
        #expect(known.exitCode == 0 && known.stdout == "No resources found.\n", "\(known.stderr)")
    }

    @Test func aBrokenKubeconfigNamesTheSpot() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "apiVersion: v1\nclusters: {}\n".write(toFile: dir + "/k.yaml", atomically: true, encoding: .utf8)
        let r = try await Binary.run(["kube", "get", "nodes", "--kubeconfig", dir + "/k.yaml"])
        #expect(r.exitCode == 1)
        #expect(r.stderr.hasPrefix("\(dir)/k.yaml:"), "\(r.stderr)")
    }
}
