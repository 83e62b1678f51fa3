import Foundation
import Synchronization
import Testing
import TestSupport
import KubeTestServer
import KubeClient
import Reconcilers
import YAML

@Suite("nodeagent render, and apply --only helm,argocd with the real binary", .serialized)
struct RenderTests {
    static let secret = "pg-Secret-7f3a9"

    /// Schema validation of the core objects (CRDs' kinds have no schema there and are skipped
    /// with a warning), with Kubernetes 1.31's OpenAPI in strict mode.
    func validate(_ yaml: String) async throws -> CommandResult {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try yaml.write(toFile: dir + "/objects.yaml", atomically: true, encoding: .utf8)
        return try await SystemCommandRunner().run(Command("kubernetes-validate", ["--strict", "-k", "1.31.0", dir + "/objects.yaml"],
                                                           timeout: .seconds(60)))
    }

    @Test func renderIsSchemaValidYAMLAndShowsNoSecret() async throws {
        let r = try await Binary.run(["render", "--state", Fixtures.example])
        #expect(r.exitCode == 0, "\(r.stderr)")
        let documents = r.stdout.components(separatedBy: "---\n").dropFirst()
        #expect(documents.count == 15)
        var kinds: [String] = []
        for document in documents {
            let node = try YAMLParser().parseDocument(Array(document.utf8), file: "render")
            let value = JSONValue(node)
            kinds.append(value["kind"]?.string ?? "?")
            #expect(value["metadata"]?["labels"]?["app.kubernetes.io/managed-by"]?.string == "nodeagent")
            if value["kind"]?.string == "Secret" {
                #expect(value["data"] == nil)
                let shown = value["stringData"]?.jsonText ?? ""
                #expect(shown.contains("<redacted: the content of /etc/nodeagent/secrets/"), "\(shown)")
            }
        }
        #expect(kinds == ["HelmChart", "Secret", "HelmChart", "HelmChart", "HelmChart", "HelmChartConfig", "Secret", "PrometheusRule", "Service",
                          "Endpoints", "ServiceMonitor", "ConfigMap", "AppProject", "AppProject", "Application"])
        let checked = try await validate(r.stdout)
        #expect(checked.exitCode == 0, "\(checked.stdout)\(checked.stderr)")
        #expect(checked.stdout.contains("passed for resource secret/nodeagent-values-monitoring against version 1.31"), "\(checked.stdout)")
        let helm = try await Binary.run(["render", "--state", Fixtures.example, "--only", "argocd"])
        #expect(helm.stdout.components(separatedBy: "---\n").count == 4)
        let wrong = try await Binary.run(["render", "--state", Fixtures.example, "--only", "firewall"])
        #expect(wrong.exitCode == 1 && wrong.stderr.contains("\"firewall\" applies no Kubernetes objects"))
    }

    /// What apply sends (secret values included) passes the same schemas, and a deliberately
    /// broken Secret does not: the validation can fail.
    @Test func appliedCoreObjectsAreSchemaValid() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let files = RootedFileSystem(root: dir)
        try files.write("/etc/nodeagent/secrets/grafana-admin-password", Array("\(Self.secret)\n".utf8), mode: 0o600)
        try files.write("/etc/nodeagent/secrets/git-token", Array("t0ken\n".utf8), mode: 0o600)
        try files.write("/etc/nodeagent/secrets/smtp-password", Array("smtp-pw\n".utf8), mode: 0o600)
        var platform = try DesiredStateLoader.load(path: Fixtures.example)
        platform.spec.argocd?.appOfApps?.username = "deploy"
        platform.spec.argocd?.appOfApps?.passwordFile = try AbsolutePath(parsing: "/etc/nodeagent/secrets/git-token")
        let objects = try ClusterRender.all(platform, secrets: .files(files))
        #expect(objects.filter(\.isSecret).count == 3)
        // The SMTP password goes into the Secret without the file's final newline (Alertmanager reads it as it is).
        #expect(objects.first { $0.ref.name == "nodeagent-alertmanager-smtp" }.map { KubeViews.secretData($0.body)["password"] } == Array("smtp-pw".utf8))
        let yaml = objects.map { "---\n" + $0.stamped.yamlText }.joined()
        let checked = try await validate(yaml)
        #expect(checked.exitCode == 0, "\(checked.stdout)\(checked.stderr)")
        #expect(checked.stdout.contains("passed for resource secret/nodeagent-repo-root"), "\(checked.stdout)")
        for core in ["service/nodeagent", "endpoints/nodeagent", "configmap/nodeagent-dashboard", "secret/nodeagent-alertmanager-smtp"] {
            #expect(checked.stdout.contains("passed for resource \(core)"), "\(core): \(checked.stdout)")
        }
        let broken = try await validate(yaml.replacingOccurrences(of: "type: Opaque", with: "type: Opaque\nsurprise: true"))
        #expect(broken.exitCode == 1)
    }

    /// The "done when": the real binary drives the test API server to the example's
    /// declared state, while a fake helm-controller and a fake Argo CD do their part.
    @Test func applyOnlyHelmAndArgoCDConvergesTheExample() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        try lab.writeSecret("/etc/nodeagent/secrets/grafana-admin-password", "\(Self.secret)\n")
        let stop = Atomic<Bool>(false)
        let controller = lab.controller, server = lab.server
        let cluster = Task.detached {
            var crd = false
            while !stop.load(ordering: .relaxed) {
                controller.step()
                if !crd, server.object("deployments", namespace: "argocd", name: "argocd-server", groupVersion: "apps/v1") != nil {
                    controller.establishApplicationCRD()
                    crd = true
                }
                if var root = server.object("applications", namespace: "argocd", name: "root", groupVersion: "argoproj.io/v1alpha1"),
                   root["status"] == nil {
                    root[["status"]] = .object(["sync": .object(["status": .string("Synced")]), "health": .object(["status": .string("Healthy")])])
                    server.put(KubeTestServer.application, namespace: "argocd", root)
                }
                try? await Task.sleep(for: .milliseconds(150))
            }
        }
        defer { stop.store(true, ordering: .relaxed) }
        let r = try await Binary.run(["apply", "--state", Fixtures.example, "--only", "helm,argocd", "--kubeconfig", lab.kubeconfig,
                                      "--root", lab.root, "--wait", "20s"])
        stop.store(true, ordering: .relaxed)
        await cluster.value
        #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("helm: Ready: Converged: argocd: argo-cd 7.7.11 installed and available; monitoring: kube-prometheus-stack 67.4.0 installed and available; cnpg: cloudnative-pg 0.29.0 installed and available; postgres: cluster 0.8.1 installed and available"), "\(r.stdout)")
        #expect(r.stdout.contains("argocd: Ready: Converged: root Application root: sync Synced, health Healthy (3 changes applied)"), "\(r.stdout)")
        #expect(!(r.stdout + r.stderr).contains(Self.secret))
        for name in ["argocd", "monitoring", "cnpg", "postgres"] { #expect(lab.chart(name) != nil) }
        // Run again: nothing to do, exit 0.
        let again = try await Binary.run(["plan", "--state", Fixtures.example, "--only", "helm,argocd", "--kubeconfig", lab.kubeconfig, "--root", lab.root])
        #expect(again.exitCode == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.hasSuffix("0 changes pending\n"), "\(again.stdout)")
    }
}
