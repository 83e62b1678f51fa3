import Foundation
import Testing
import TestSupport
import KubeClient
import KubeTestServer
import Reconcilers
import YAML

/// The test API server checked with the real kubectl as a client: if kubectl accepts it, the
/// server speaks Kubernetes well enough for KubeClient's tests to mean something.
@Suite("The test API server, checked by kubectl", .serialized)
struct KubectlTests {
    struct Kubectl {
        let kubeconfig: String
        let cache: String

        func run(_ arguments: [String], input: String? = nil) async throws -> CommandResult {
            try await SystemCommandRunner().run(Command("kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", cache, "--request-timeout", "10s"] + arguments,
                                                        input: input.map { Array($0.utf8) }, timeout: .seconds(60)))
        }
    }

    func withKubectl(_ body: (KubeTestServer, Kubectl) async throws -> Void) async throws {
        let server = try await KubeTestServer()
        let dir = Fixtures.temporaryDirectory()
        do {
            try server.writeKubeconfig(to: dir + "/kubeconfig")
            try await body(server, Kubectl(kubeconfig: dir + "/kubeconfig", cache: dir + "/cache"))
        } catch {
            server.stop()
            try? FileManager.default.removeItem(atPath: dir)
            throw error
        }
        server.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test func kubectlGetsAppliesListsAndDeletes() async throws {
        try await withKubectl { (server: KubeTestServer, kubectl: Kubectl) async throws in
            let ns = try await kubectl.run(["apply", "--server-side", "--validate=false", "-f", "-"],
                                           input: "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n")
            #expect(ns.exitCode == 0, "\(ns.stderr)")
            #expect(ns.stdout.contains("namespace/apps serverside-applied"))
            let namespaces = try await kubectl.run(["get", "namespaces"])
            #expect(namespaces.exitCode == 0, "\(namespaces.stderr)")
            #expect(namespaces.stdout.contains("apps"))
            let cm = try await kubectl.run(["apply", "--server-side", "--validate=false", "-f", "-"],
                                           input: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: apps}\ndata: {mode: production}\n")
            #expect(cm.exitCode == 0, "\(cm.stderr)")
            #expect(cm.stdout.contains("configmap/settings serverside-applied"))
            server.register(.init(group: "helm.cattle.io", version: "v1", kind: "HelmChart", plural: "helmcharts", namespaced: true))
            let chart = try await kubectl.run(["apply", "--server-side", "--validate=false", "-f", "-"], input: """
                apiVersion: helm.cattle.io/v1
                kind: HelmChart
                metadata: {name: argocd, namespace: kube-system}
                spec: {chart: argo-cd, repo: "https://argoproj.github.io/argo-helm", version: 7.7.11, targetNamespace: argocd}

                """)
            #expect(chart.exitCode == 0, "\(chart.stderr)")
            let charts = try await kubectl.run(["get", "helmcharts", "-A", "-o", "json"])
            #expect(charts.exitCode == 0, "\(charts.stderr)")
            let list = try #require(JSONValue.parse(Array(charts.stdout.utf8)))
            #expect(list["items"]?.array?.first?["spec"]?["targetNamespace"]?.string == "argocd")
            let deleted = try await kubectl.run(["delete", "configmap", "settings", "-n", "apps"])
            #expect(deleted.exitCode == 0, "\(deleted.stderr)")
            #expect(deleted.stdout.contains("configmap \"settings\" deleted"))
            let gone = try await kubectl.run(["get", "configmap", "settings", "-n", "apps"])
            #expect(gone.exitCode == 1)
            #expect(gone.stderr.contains("NotFound") || gone.stderr.contains("not found"))
        }
    }
}
