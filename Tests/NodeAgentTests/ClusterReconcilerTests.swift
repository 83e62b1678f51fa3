import Foundation
import Testing
import TestSupport
import KubeTestServer
import KubeClient
@testable import Reconcilers
import YAML

/// The helm and argocd reconcilers against the test API server, with `FakeHelmController`
/// playing helm-controller, in a temp root that holds the secret files.
final class ClusterLab: @unchecked Sendable {
    let server: KubeTestServer
    let root: String
    let kubeconfig: String
    let controller: FakeHelmController

    /// - Parameter helmController: the helm-controller whose CRDs the API server serves and
    ///   prunes by: v0.17.1 is what current K3s lines bundle (v1.35.5+k3s1), v0.16.5 what
    ///   v1.31.4+k3s1 bundles.
    /// The node's and the API server's one clock: object times and nodeagent's change marks
    /// move together; with a manual one a test moves them past a whole second without sleeping
    /// (the real clock where the nodeagent binary runs against the lab).
    let clock: any WallClock

    init(helmController: HelmControllerVersion = .v0_17_1, clock: any WallClock = SystemWallClock()) async throws {
        self.clock = clock
        server = try await KubeTestServer(clock: clock)
        server.serveHelmCRDs(helmController)
        server.gitVersion = helmController == .v0_17_1 ? "v1.35.5+k3s1" : "v1.31.4+k3s1"
        root = Fixtures.temporaryDirectory()
        kubeconfig = root + "/kubeconfig.yaml"
        try server.writeKubeconfig(to: kubeconfig)
        controller = FakeHelmController(server: server)
        try writeSecret("/etc/nodeagent/secrets/postgres-password", "pg-Secret-7f3a9\n")
        try writeSecret("/etc/nodeagent/secrets/git-token", "ghp_TokenValue42\n")
    }

    func stop() {
        server.stop()
        try? FileManager.default.removeItem(atPath: root)
    }

    func writeSecret(_ path: String, _ text: String, mode: Int = 0o600) throws {
        try FileManager.default.createDirectory(atPath: root + (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: root + path, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
    }

    var engine: Engine {
        get throws {
            var host = Host(root: root)
            host.clock = clock
            return try Engine(BuiltInReconcilers.all(on: host, options: PassOptions(kubeconfig: kubeconfig)))
        }
    }

    func apply(_ platform: Platform) async throws -> [ReconcilerName: Engine.Entry] {
        let entries = try await engine.apply(platform, only: [.helm, .argocd])
        return Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
    }

    func plan(_ platform: Platform) async throws -> [ReconcilerName: Engine.Entry] {
        let entries = try await engine.plan(platform, only: [.helm, .argocd])
        return Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
    }

    /// Requests that changed something.
    var writes: [String] { server.requests.filter { $0.hasPrefix("PATCH") || $0.hasPrefix("DELETE") } }

    /// A client of the lab's API server, as nodeagent makes one.
    func api() throws -> KubeAPI { KubeAPI(config: try Kubeconfig.load(path: kubeconfig)) }

    func chart(_ name: String) -> JSONValue? {
        server.object("helmcharts", namespace: "kube-system", name: name, groupVersion: "helm.cattle.io/v1")
    }
}

func platform(releases: String = ClusterReconcilerTests.releases, argocd: String = ClusterReconcilerTests.argocd) throws -> Platform {
    let text = "apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: vps-1}\nspec:\n  helmReleases:\n" + releases + argocd
    return try DesiredStateLoader.load(Array(text.utf8), file: "platform.yaml")
}

extension Engine.Entry {
    var condition: Condition? {
        switch outcome {
        case .applied(_, let c), .failed(let c): return c
        default: return nil
        }
    }

    var changes: [Change] {
        switch outcome {
        case .applied(let c, _), .planned(let c): return c
        default: return []
        }
    }
}

@Suite("helm and argocd reconcilers against the test API server", .serialized)
struct ClusterReconcilerTests {
    static let releases = """
        - {name: argocd, chart: argo-cd, repo: https://argoproj.github.io/argo-helm, version: 7.7.11, namespace: argocd}
        - name: postgresql
          chart: postgresql
          repo: https://charts.bitnami.com/bitnami
          version: 16.3.0
          namespace: db
          values: {primary: {persistence: {size: 20Gi}}}
          valuesSecrets: [{key: auth.postgresPassword, file: /etc/nodeagent/secrets/postgres-password}]

    """
    static let argocd = """
      argocd:
        release: argocd
        appOfApps: {repoURL: "https://git.example.com/apps.git", path: apps, targetRevision: main,
                    username: deploy, passwordFile: /etc/nodeagent/secrets/git-token}

    """

    @Test func installsWaitsForArgoCDThenAppliesTheRootAndIsIdempotent() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let state = try platform()

        // Pass 1: charts and the values Secret go in; nothing has run them yet.
        let first = try await lab.apply(state)
        #expect(first[.helm]?.changes.map(\.subject) == ["helmchart kube-system/argocd", "secret kube-system/nodeagent-values-postgresql",
                                                         "helmchart kube-system/postgresql"])
        #expect(first[.helm]?.condition?.status == .progressing)
        #expect(first[.helm]?.condition?.reason == "WaitingForJob")
        #expect(first[.argocd]?.condition?.reason == "WaitingForArgoCD", "\(String(describing: first[.argocd]))")
        let pg = try #require(lab.chart("postgresql"))
        #expect(pg["spec"]?["valuesContent"]?.string == "primary:\n  persistence:\n    size: \"20Gi\"\n")
        #expect(pg["spec"]?["valuesSecrets"]?.array?.first?["name"]?.string == "nodeagent-values-postgresql")
        #expect(pg["metadata"]?["labels"]?["app.kubernetes.io/managed-by"]?.string == "nodeagent")
        let secret = try #require(lab.server.object("secrets", namespace: "kube-system", name: "nodeagent-values-postgresql"))
        let values = KubeViews.secretData(secret)["values.yaml"].map { String(decoding: $0, as: UTF8.self) }
        #expect(values == #"{"auth":{"postgresPassword":"pg-Secret-7f3a9"}}"#)
        // The plan never shows a secret, plain or base64.
        let shown = first.values.flatMap(\.changes).map(\.description).joined(separator: "\n")
        let encoded = Data(#"{"auth":{"postgresPassword":"pg-Secret-7f3a9"}}"#.utf8).base64EncodedString()
        #expect(secret["data"]?["values.yaml"]?.string == encoded)
        #expect(!shown.contains("pg-Secret-7f3a9") && !shown.contains(encoded) && !shown.contains(Data("pg-Secret-7f3a9".utf8).base64EncodedString()))

        // helm-controller runs the Jobs; Argo CD's CRD is not there yet: argocd waits.
        lab.controller.step()
        let second = try await lab.apply(state)
        #expect(second[.helm]?.changes.isEmpty == true)
        #expect(second[.helm]?.condition?.status == .ready, "\(String(describing: second[.helm]))")
        #expect(second[.argocd]?.condition?.reason == "CRDNotEstablished")
        #expect(lab.server.requests.contains { $0.contains("/apis/argoproj.io/") } == false)

        // The CRD is established: the root Application and its repository Secret go in.
        lab.controller.establishApplicationCRD()
        let third = try await lab.apply(state)
        #expect(third[.argocd]?.changes.map(\.subject) == ["secret argocd/nodeagent-repo-root", "appproject argocd/root", "appproject argocd/default",
                                                         "application argocd/root"])
        // The root is confined to its project: its repository, in-cluster destinations, only
        // Namespaces among cluster-scoped kinds; and the default project is emptied, so a child
        // Application naming it gets nothing.
        let project = try #require(lab.server.object("appprojects", namespace: "argocd", name: "root", groupVersion: "argoproj.io/v1alpha1"))
        #expect(project["spec"]?["sourceRepos"] == .array([.string("https://git.example.com/apps.git")]), "\(project)")
        #expect(project["spec"]?["destinations"] == .array([.object(["server": .string("https://kubernetes.default.svc"), "namespace": .string("*")])]))
        #expect(project["spec"]?["clusterResourceWhitelist"] == .array([.object(["group": .string(""), "kind": .string("Namespace")])]))
        let defaultProject = try #require(lab.server.object("appprojects", namespace: "argocd", name: "default", groupVersion: "argoproj.io/v1alpha1"))
        #expect(defaultProject["spec"]?["sourceRepos"] == .array([]) && defaultProject["spec"]?["destinations"] == .array([]))
        #expect(third[.argocd]?.condition?.status == .progressing)
        let root = try #require(lab.server.object("applications", namespace: "argocd", name: "root", groupVersion: "argoproj.io/v1alpha1"))
        #expect(root["spec"]?["syncPolicy"]?["automated"]?["selfHeal"] == .bool(true))
        #expect(root["spec"]?["syncPolicy"]?["automated"]?["prune"] == .bool(true))
        #expect(root["spec"]?["source"]?["targetRevision"]?.string == "main")
        #expect(root["spec"]?["project"]?.string == "root")
        let repo = try #require(lab.server.object("secrets", namespace: "argocd", name: "nodeagent-repo-root"))
        #expect(repo["metadata"]?["labels"]?["argocd.argoproj.io/secret-type"]?.string == "repository")
        #expect(KubeViews.secretData(repo)["password"] == Array("ghp_TokenValue42".utf8))

        // Argo CD reports: the status shows in the condition; a further pass writes nothing.
        var synced = root
        synced[["status"]] = .object(["sync": .object(["status": .string("Synced"), "revision": .string("4f2a9c1e0b7d5a3c")]),
                                      "health": .object(["status": .string("Healthy")])])
        lab.server.put(KubeTestServer.application, namespace: "argocd", synced)
        let before = lab.writes.count
        let fourth = try await lab.apply(state)
        #expect(lab.writes.count == before, "an idempotent pass writes nothing: \(lab.writes.dropFirst(before))")
        #expect(fourth[.argocd]?.condition == Condition(.ready, reason: "Converged",
                                                       message: "root Application root: sync Synced, health Healthy at 4f2a9c1e0b7d"))
        #expect(fourth[.helm]?.condition?.status == .ready)
    }

    @Test func aValuesChangeIsAppliedAndWaitsForTheNewJob_aRemovedReleaseIsPruned() async throws {
        let clock = ManualWallClock(now: SystemWallClock().now())
        let lab = try await ClusterLab(clock: clock)
        defer { lab.stop() }
        _ = try await lab.apply(try platform(argocd: ""))
        lab.controller.step()
        #expect(try await lab.apply(try platform(argocd: ""))[.helm]?.condition?.status == .ready)

        // Job times have whole seconds: let the Job above be from an earlier second than the change.
        clock.advance(by: TimeSpan(milliseconds: 1100))
        let changed = try platform(releases: Self.releases.replacingOccurrences(of: "size: 20Gi", with: "size: 50Gi"), argocd: "")
        let plan = try await lab.plan(changed)
        let change = try #require(plan[.helm]?.changes.first)
        #expect(plan[.helm]?.changes.count == 1)
        #expect(change.description.contains("~ helmchart kube-system/postgresql"))
        #expect(change.description == "~ helmchart kube-system/postgresql\n    ~ spec.valuesContent:\n      -    size: \"20Gi\"\n      +    size: \"50Gi\"",
                "\(change)")
        let applied = try await lab.apply(changed)
        #expect(applied[.helm]?.condition?.status == .progressing)
        #expect(applied[.helm]?.condition?.message.contains("ran for an earlier spec") == true, "\(String(describing: applied[.helm]))")
        #expect(lab.chart("postgresql")?["spec"]?["valuesContent"]?.string?.contains("50Gi") == true)
        lab.controller.step()
        #expect(try await lab.apply(changed)[.helm]?.condition?.status == .ready)

        // postgresql leaves the desired state: its chart and values Secret go, argocd's stays.
        let fewer = try platform(releases: "    - {name: argocd, chart: argo-cd, repo: https://argoproj.github.io/argo-helm, version: 7.7.11, namespace: argocd}\n",
                                 argocd: "")
        let pruned = try await lab.apply(fewer)
        #expect(Set(pruned[.helm]?.changes.map(\.description) ?? []) == [
            "- helmcharts kube-system/postgresql (no longer in the desired state)",
            "- secrets kube-system/nodeagent-values-postgresql (no longer in the desired state)",
        ])
        #expect(lab.chart("postgresql") == nil)
        #expect(lab.server.object("secrets", namespace: "kube-system", name: "nodeagent-values-postgresql") == nil)
        #expect(lab.chart("argocd") != nil)
    }

    @Test func objectsNodeagentDoesNotManageAreNeverPruned() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        // K3s's own HelmCharts (traefik) live in kube-system too, without nodeagent's labels.
        lab.server.put(KubeTestServer.helmChart, namespace: "kube-system", .object([
            "apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChart"),
            "metadata": .object(["name": .string("traefik"), "namespace": .string("kube-system")]),
            "spec": .object(["chart": .string("https://%{KUBERNETES_API}%/static/charts/traefik.tgz")]),
        ]))
        _ = try await lab.apply(try platform(argocd: ""))
        #expect(lab.chart("traefik") != nil)
        #expect(!lab.writes.contains { $0.contains("traefik") })
    }

    /// helm-controller's install Job restarts a failing `helm install` in its pod (OnFailure,
    /// backoffLimit 1000): the Job never fails and the HelmChart never says Failed. The pod is
    /// what shows it, within the pass that first sees it.
    @Test func aCrashLoopingInstallIsFailedWithItsCauseWithinOnePass() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        _ = try await lab.apply(try platform(argocd: ""))
        lab.controller.step(failing: ["postgresql"])
        let job = try #require(lab.server.object("jobs", namespace: "kube-system", name: "helm-install-postgresql", groupVersion: "batch/v1"))
        #expect(job["spec"]?["backoffLimit"]?.int == 1000 && job["spec"]?["template"]?["spec"]?["restartPolicy"]?.string == "OnFailure")
        #expect(job["status"]?["failed"] == nil && lab.chart("postgresql")?["status"]?["conditions"]?.array?.contains {
            $0["type"]?.string == "Failed" && $0["status"]?.string == "False"
        } == true, "the Job and the chart say nothing has failed")
        let result = try await lab.apply(try platform(argocd: ""))
        let condition = try #require(result[.helm]?.condition)
        #expect(condition.status == .failed)
        #expect(condition.reason == "InstallCrashLooping")
        #expect(condition.message.contains("postgresql: the install keeps failing: pod helm-install-postgresql-x7k2p: container helm CrashLoopBackOff after 1 restart (last exit 1: Error)"),
                "\(condition.message)")
        #expect(condition.message.contains("Error: INSTALLATION FAILED: chart \"postgresql\" version \"16.3.0\" not found"), "\(condition.message)")
        #expect(condition.message.contains("argocd: argo-cd 7.7.11 installed and available"))
        // It keeps restarting; the count says so.
        lab.controller.step(failing: ["postgresql"])
        let again = try await lab.apply(try platform(argocd: ""))
        #expect(again[.helm]?.condition?.message.contains("after 2 restarts") == true)
    }

    @Test func driftIsRepaired_andUnavailableWorkloadsKeepItProgressing() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let state = try platform(argocd: "")
        _ = try await lab.apply(state)
        lab.controller.step(available: false)
        let waiting = try await lab.apply(state)
        #expect(waiting[.helm]?.condition?.reason == "WorkloadsNotAvailable")
        #expect(waiting[.helm]?.condition?.message.contains("deployment/argocd-server (0/1 available)") == true)
        // Mid-rollout: the old pods are available, but the new spec is not rolled out yet.
        lab.server.put(KubeTestServer.builtIn.first { $0.plural == "deployments" }!, namespace: "argocd", .object([
            "apiVersion": .string("apps/v1"), "kind": .string("Deployment"),
            "metadata": .object(["name": .string("argocd-repo-server"), "namespace": .string("argocd"), "generation": .int(2),
                                 "labels": .object(["app.kubernetes.io/instance": .string("argocd")])]),
            "spec": .object(["replicas": .int(2)]),
            "status": .object(["observedGeneration": .int(2), "updatedReplicas": .int(1), "availableReplicas": .int(2)]),
        ]))
        let rolling = try await lab.apply(state)
        #expect(rolling[.helm]?.condition?.message.contains("deployment/argocd-repo-server (1/2 updated)") == true, "\(String(describing: rolling[.helm]))")

        // Somebody pins another version by hand (another field manager, forced).
        let (status, _) = try await lab.server.rawApply(.object([
            "apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChart"),
            "metadata": .object(["name": .string("argocd"), "namespace": .string("kube-system")]),
            "spec": .object(["version": .string("6.0.0")]),
        ]), path: "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/argocd?fieldManager=kubectl&force=true")
        #expect(status == 200)
        let plan = try await lab.plan(state)
        #expect(plan[.helm]?.changes.map(\.description) == ["~ helmchart kube-system/argocd\n    ~ spec.version: \"6.0.0\" → \"7.7.11\""])
        _ = try await lab.apply(state)
        #expect(lab.chart("argocd")?["spec"]?["version"]?.string == "7.7.11")
        #expect(try await lab.plan(state)[.helm]?.changes.isEmpty == true)
    }

    @Test func aMissingOrExposedSecretFileFailsWithoutWritingAnything() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        try lab.writeSecret("/etc/nodeagent/secrets/postgres-password", "pg\n", mode: 0o644)
        let exposed = try await lab.apply(try platform(argocd: ""))
        #expect(exposed[.helm]?.condition?.reason == "SecretFileExposed")
        #expect(exposed[.helm]?.condition?.message.contains("/etc/nodeagent/secrets/postgres-password") == true)
        try FileManager.default.removeItem(atPath: lab.root + "/etc/nodeagent/secrets/postgres-password")
        let missing = try await lab.apply(try platform(argocd: ""))
        #expect(missing[.helm]?.condition?.reason == "SecretFileMissing")
        #expect(lab.writes.isEmpty)
    }

    @Test func noKubeconfigYetIsWaitingNotFailure() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let engine = try Engine(BuiltInReconcilers.all(on: Host(root: lab.root)))
        let entries = await engine.apply(try platform(argocd: ""), only: [.helm])
        #expect(entries.first?.condition?.status == .progressing)
        #expect(entries.first?.condition?.reason == "NoKubeconfig")
    }
}

/// Property: for randomly generated valid Helm releases (names, versions, namespaces, values
/// with awkward keys and strings, secret values), apply → observe → plan is empty, and a plan
/// never touches a release that did not change.
@Suite("Property: cluster reconcilers converge in one pass and stay converged", .serialized)
struct ClusterPropertyTests {
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ items: [T]) -> T { items[int(items.count)] }
    }

    static let strings = ["plain", "yes", "no", "on", "0777", "1e3", "12:30", "~", "null", "- dash", "a: b", "x #y", "ünï €", "tab\there",
                          "line\nbreak\n", "two\n\nlines", "'quoted'", "\"dq\"", "[x]", "{y}", "*star", "&amp", "!bang", "%pct", "@at", "`tick`",
                          "", " lead", "trail ", "C:\\path", "https://e.example.com/a?b=c#d"]

    static func value(_ r: inout Random, depth: Int) -> String {
        switch r.int(depth > 2 ? 4 : 6) {
        case 0: return String(r.int(100_000) - 50_000)
        case 1: return r.pick(["true", "false", "null", "1.5", "-0.25"])
        case 2, 3: return JSONValue.string(r.pick(strings)).jsonText
        case 4: return "[" + (0..<r.int(4)).map { _ in value(&r, depth: depth + 1) }.joined(separator: ", ") + "]"
        default:
            return "{" + (0..<r.int(4)).map { i in "\(JSONValue.string(r.pick(strings) + "\(i)").jsonText): \(value(&r, depth: depth + 1))" }
                .joined(separator: ", ") + "}"
        }
    }

    static func releases(_ r: inout Random, count: Int) -> String {
        (0..<count).map { i in
            let name = "r\(i)-\(r.int(1000))"
            var line = "    - {name: \(name), chart: c\(r.int(50)), repo: https://charts.example.com/\(r.int(9)), version: \"\(r.int(10)).\(r.int(20)).\(r.int(30))\", namespace: ns\(r.int(5))"
            if r.int(2) == 0 { line += ", createNamespace: false" }
            line += ", values: {app: \(value(&r, depth: 0)), \"dotted.key\": \(value(&r, depth: 1))}"
            if r.int(3) == 0 { line += ", valuesSecrets: [{key: auth.password, file: /etc/nodeagent/secrets/postgres-password}]" }
            return line + "}\n"
        }.joined()
    }

    @Test func randomReleasesConvergeInOnePass() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        var r = Random(state: 0x5EED_2026_1126)
        for round in 0..<12 {
            let text = Self.releases(&r, count: 1 + r.int(5))
            let state = try platform(releases: text, argocd: "")
            let applied = try await lab.apply(state)
            #expect(applied[.helm]?.condition?.status != .failed, "round \(round): \(String(describing: applied[.helm]))")
            let plan = try await lab.plan(state)
            #expect(plan[.helm]?.changes.isEmpty == true, "round \(round) is not converged after one apply:\n\(text)\n\(plan[.helm]?.changes.map(\.description) ?? [])")
            // What was applied reads back as the values given (YAML written, the server's JSON read).
            for release in state.spec.helmReleases ?? [] where release.values.members?.isEmpty == false {
                let content = lab.chart(release.name.value)?["spec"]?["valuesContent"]?.string ?? ""
                let parsed = JSONValue(try YAMLParser().parseDocument(Array(content.utf8), file: "valuesContent"))
                #expect(parsed == release.values, "round \(round) \(release.name): \(content)")
            }
        }
    }
}

/// What a real node's API server and helm-controller do that the first model did not:
/// pruning by the CRD's structural schema, claiming by typed Update, dependsOn.
@Suite("K3s fidelity: CRD pruning, strict applies, claiming, dependsOn", .serialized)
struct K3sFidelityTests {
    static let withSecrets = """
        - name: postgresql
          chart: postgresql
          repo: https://charts.example.com
          version: 16.3.0
          namespace: db
          valuesSecrets: [{key: auth.postgresPassword, file: /etc/nodeagent/secrets/postgres-password}]

    """

    /// K3s v1.31.4+k3s1's helm-controller (v0.16.5) has no spec.valuesSecrets. kube-apiserver
    /// refuses it in a server-side apply (HTTP 500, "field not declared in schema"), and drops
    /// it from any other write with only a Warning header by default; nodeagent checks the
    /// served CRD before it even tries, and names the field when the server refuses.
    @Test func aFieldTheServedCRDLacksIsNeverLostSilently() async throws {
        let lab = try await ClusterLab(helmController: .v0_16_5)
        defer { lab.stop() }
        let chart: JSONValue = .object([
            "apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChart"),
            "metadata": .object(["name": .string("probe"), "namespace": .string("kube-system")]),
            "spec": .object(["chart": .string("x"), "valuesSecrets": .array([.object(["name": .string("s")])])]),
        ])
        let path = "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/probe"
        func curl(_ contentType: String, _ body: JSONValue, _ query: String) async throws -> String {
            try await SystemCommandRunner().run(Command("curl", [
                "-sS", "-D", "-", "--cacert", lab.server.tls.directory + "/ca.pem", "--cert", lab.server.tls.directory + "/client.pem",
                "--key", lab.server.tls.directory + "/client.key", "-X", "PATCH", "-H", "Content-Type: \(contentType)",
                "--data-binary", body.jsonText, lab.server.url + path + "?" + query])).stdout
        }
        // Server-side apply: refused whatever fieldValidation says, as a 500.
        for validation in ["Warn", "Ignore", "Strict"] {
            let r = try await curl("application/apply-patch+yaml", chart, "fieldManager=probe&fieldValidation=\(validation)")
            #expect(r.hasPrefix("HTTP/1.1 500") && r.contains(".spec.valuesSecrets: field not declared in schema"), "\(validation): \(r)")
        }
        #expect(lab.chart("probe") == nil)
        // Any other write (a merge patch here): pruned, with only a Warning header by default.
        var known = chart
        known[["spec", "valuesSecrets"]] = nil
        _ = try await lab.api().apply(known, to: ClusterRender.helmChartRef("probe"))
        let patch: JSONValue = .object(["spec": .object(["version": .string("1.0.0"), "valuesSecrets": .array([.object(["name": .string("s")])])])])
        for (validation, status) in [("Warn", 200), ("Ignore", 200), ("Strict", 400)] {
            let r = try await curl("application/merge-patch+json", patch, "fieldValidation=\(validation)")
            #expect(r.hasPrefix("HTTP/1.1 \(status)"), "\(validation): \(r)")
            switch validation {
            case "Warn": #expect(r.contains("Warning: 299 - \"unknown field \\\"spec.valuesSecrets\\\"\""), "\(r)")
            case "Strict": #expect(r.contains(#"unknown field \"spec.valuesSecrets\""#), "\(r)")
            default: #expect(!r.lowercased().contains("warning:"))
            }
        }
        #expect(lab.chart("probe")?["spec"]?["valuesSecrets"] == nil, "pruned")
        #expect(lab.chart("probe")?["spec"]?["version"]?.string == "1.0.0", "the rest kept")

        // nodeagent: refused before anything is applied, with the reason and what to do.
        let state = try platform(releases: Self.withSecrets, argocd: "")
        let result = try await lab.apply(state)
        let condition = try #require(result[.helm]?.condition)
        #expect(condition.status == .stalled && condition.reason == "FieldNotServed", "\(condition)")
        #expect(condition.message.contains("served by v1.31.4+k3s1 has no spec.valuesSecrets") && condition.message.contains("upgrade K3s"),
                "\(condition.message)")
        #expect(lab.chart("postgresql") == nil && !lab.writes.contains { $0.contains("postgresql") })

        // And when a CRD hides what it lacks (no schema to read), the server's refusal is named,
        // at once: not retried as a server error.
        let api = try lab.api()
        let before = lab.server.requests.count
        do {
            _ = try await api.apply(chart, to: ClusterRender.helmChartRef("probe"))
            Issue.record("an apply of an unknown field succeeded")
        } catch let error as KubeStatusError {
            #expect(error.code == 500 && error.message.contains("field not declared in schema"))
            let failure = ReconcileError.kube(error, doing: "applying")
            #expect(failure.kind == .stalled && failure.reason == "FieldNotServed" && failure.message.contains("spec.valuesSecrets"), "\(failure)")
        }
        #expect(lab.server.requests.count == before + 1, "not retried")
    }

    /// Current K3s lines bundle v0.17.1, which serves valuesSecrets: the same release installs.
    @Test func theSameReleaseKeepsEveryFieldOnACurrentK3s() async throws {
        let lab = try await ClusterLab(helmController: .v0_17_1)
        defer { lab.stop() }
        let state = try platform(releases: Self.withSecrets, argocd: "")
        _ = try await lab.apply(state)
        let sent = try ClusterRender.helm(state.spec.helmReleases ?? [], secrets: .redacted).first { $0.ref.plural == "helmcharts" }!
        let kept = try #require(lab.chart("postgresql"))
        // Every field nodeagent sent is there, as sent.
        #expect(ObjectSync.differences(sent.body["spec"]!, kept["spec"], secret: false, path: ["spec"]).isEmpty, "\(kept)")
    }

    /// helm-controller claims a chart with a typed Update that drops `omitempty` zero values:
    /// a release with createNamespace: false converges, and the next pass writes nothing.
    @Test func aClaimedChartWithZeroValuesConvergesAndThenWritesNothing() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let state = try platform(releases: """
            - {name: cache, chart: redis, repo: https://charts.example.com, version: 1.0.0, namespace: db, createNamespace: false}

        """, argocd: "")
        _ = try await lab.apply(state)
        lab.controller.step()
        #expect(lab.chart("cache")?["metadata"]?["annotations"]?["helmcharts.cattle.io/managed-by"]?.string == "helm-controller")
        let converged = try await lab.apply(state)
        #expect(converged[.helm]?.condition?.status == .ready, "\(String(describing: converged[.helm]))")
        let before = lab.writes.count
        let again = try await lab.apply(state)
        #expect(again[.helm]?.changes.isEmpty == true && lab.writes.count == before, "a converged node makes no write")
        #expect(lab.server.objects(KubeTestServer.builtIn.first { $0.plural == "jobs" }!, namespace: "kube-system").count == 1, "the Job was not replaced")
    }

    /// A node an earlier nodeagent set up sent `createNamespace: false`; this one does not. The
    /// apply that drops it changes nothing helm-controller renders: no new Job, so the release
    /// must not wait for one.
    @Test func aChartAppliedByTheEarlierRenderingConverges() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let state = try platform(releases: """
            - {name: cache, chart: redis, repo: https://charts.example.com, version: 1.0.0, namespace: db, createNamespace: false}

        """, argocd: "")
        var earlier = try #require(try ClusterRender.helm(state.spec.helmReleases ?? [], secrets: .redacted).first)
        earlier.body[["spec", "createNamespace"]] = .bool(false)
        earlier.body[["metadata", "annotations", ReleaseHealth.specAppliedAnnotation]] = .string("2026-01-01T00:00:00Z")
        _ = try await lab.api().apply(earlier.stamped, to: earlier.ref)
        lab.controller.step()
        let job = lab.server.object("jobs", namespace: "kube-system", name: "helm-install-cache", groupVersion: "batch/v1")
        let first = try await lab.apply(state)
        #expect(first[.helm]?.changes.map(\.subject) == ["helmchart kube-system/cache"], "the digest changed: one apply")
        lab.controller.step()
        #expect(lab.server.object("jobs", namespace: "kube-system", name: "helm-install-cache", groupVersion: "batch/v1")?["metadata"]?["uid"] == job?["metadata"]?["uid"],
                "helm-controller renders the same Job")
        let after = try await lab.apply(state)
        #expect(after[.helm]?.condition?.status == .ready, "\(String(describing: after[.helm]))")
        #expect(after[.helm]?.changes.isEmpty == true)
    }

    /// Between two back-offs the install container runs again; it has still failed.
    @Test func anInstallRunningAgainAfterFailuresIsFailedWithTheCause() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let state = try platform(releases: "    - {name: cache, chart: redis, repo: https://charts.example.com, version: 1.0.0, namespace: db}\n", argocd: "")
        _ = try await lab.apply(state)
        lab.controller.step(failing: ["cache"])
        var pod = try #require(lab.server.object("pods", namespace: "kube-system", name: "helm-install-cache-x7k2p"))
        pod[["status", "containerStatuses"]] = .array([.object([
            "name": .string("helm"), "restartCount": .int(2), "state": .object(["running": .object(["startedAt": .string(lab.server.now())])]),
            "lastState": .object(["terminated": .object(["exitCode": .int(1), "reason": .string("Error")])]),
        ])])
        lab.server.put(KubeTestServer.builtIn.first { $0.plural == "pods" }!, namespace: "kube-system", pod)
        let result = try await lab.apply(state)
        #expect(result[.helm]?.condition?.status == .failed)
        #expect(result[.helm]?.condition?.message.contains("container helm failed 2 times and is trying again (last exit 1: Error)") == true,
                "\(String(describing: result[.helm]?.condition))")
        #expect(ReleaseHealth.restarted(pod), "the log read is the failed run's (previous=true)")
    }

    @Test func aReleaseWaitsForWhatItDependsOn() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let state = try platform(releases: """
            - {name: cnpg, chart: cloudnative-pg, repo: https://cloudnative-pg.github.io/charts, version: 0.29.0, namespace: cnpg-system}
            - {name: db, chart: cluster, repo: https://cloudnative-pg.github.io/charts, version: 0.8.1, namespace: db, dependsOn: [cnpg]}

        """, argocd: "")
        let plan = try await lab.plan(state)
        let planned = plan[.helm]?.changes.map(\.description) ?? []
        #expect(planned.contains("+ helmchart kube-system/cnpg") || planned.contains { $0.hasPrefix("+ helmchart kube-system/cnpg") }, "\(planned)")
        #expect(planned.contains { $0.hasPrefix("! helmchart kube-system/db waits for dependsOn: cnpg (NotApplied)") }, "\(planned)")
        let first = try await lab.apply(state)
        #expect(lab.chart("cnpg") != nil && lab.chart("db") == nil, "only the operator goes in")
        #expect(first[.helm]?.condition?.message.contains("db: waits for dependsOn: cnpg") == true, "\(String(describing: first[.helm]))")
        lab.controller.step()
        _ = try await lab.apply(state)
        #expect(lab.chart("db") != nil, "once cnpg is Ready, db is applied")
        lab.controller.step()
        #expect(try await lab.apply(state)[.helm]?.condition?.status == .ready)
        // Unknown names and cycles are refused at validate.
        for (releases, message) in [("    - {name: a, chart: a, repo: https://x.example, version: 1, namespace: a, dependsOn: [b]}\n", "\"b\" is not a release"),
                                    ("""
                                        - {name: a, chart: a, repo: https://x.example, version: 1, namespace: a, dependsOn: [b]}
                                        - {name: b, chart: b, repo: https://x.example, version: 1, namespace: b, dependsOn: [a]}

                                    """, "dependsOn makes a cycle: a → b → a")] {
            do {
                _ = try platform(releases: releases, argocd: "")
                Issue.record("accepted \(releases)")
            } catch let error as DiagnosticsError {
                #expect(error.diagnostics.contains { $0.message.contains(message) }, "\(error.diagnostics)")
            }
        }
    }
}

@Suite struct ArgoKnownHostsTests {
    static let key = "AAAAC3NzaC1lZDI1NTE5AAAAIJyusluo6f+skZyxlCrGC9pbW+J0mbl297SaO3yWJ6Fk"

    func load(_ appOfApps: String) throws -> Platform {
        try platform(releases: "    - {name: argocd, chart: argo-cd, repo: https://argoproj.github.io/argo-helm, version: 7.7.11, namespace: argocd, values: {configs: {params: {x: y}}}}\n",
                     argocd: "  argocd:\n    release: argocd\n    appOfApps: \(appOfApps)\n")
    }

    @Test func anSSHRepositoryOnAnUnknownHostNeedsItsKeys() throws {
        do {
            _ = try load("{repoURL: \"git@git.example.com:ops/apps.git\", path: apps, sshPrivateKeyFile: /etc/nodeagent/secrets/argo-key}")
            Issue.record("accepted an unknown SSH host without keys")
        } catch let error as DiagnosticsError {
            let d = try #require(error.diagnostics.first)
            #expect(d.path.description == "spec.argocd.appOfApps.repoURL" && d.message.contains("ssh-keyscan git.example.com"), "\(d)")
        }
        // GitHub's key ships with the chart: no knownHosts needed.
        _ = try load("{repoURL: \"git@github.com:ops/apps.git\", path: apps, sshPrivateKeyFile: /etc/nodeagent/secrets/argo-key}")
        // A port other than 22 is named as known_hosts names it.
        #expect(throws: DiagnosticsError.self) {
            try load("{repoURL: \"ssh://git@git.example.com:2222/ops/apps.git\", path: apps, knownHosts: [\"git.example.com ssh-ed25519 \(Self.key)\"]}")
        }
        _ = try load("{repoURL: \"ssh://git@git.example.com:2222/ops/apps.git\", path: apps, knownHosts: [\"[git.example.com]:2222 ssh-ed25519 \(Self.key)\"]}")
        #expect(throws: DiagnosticsError.self) { try load("{repoURL: \"git@git.example.com:a.git\", path: a, knownHosts: [\"not a key line\"]}") }
    }

    @Test func knownHostsReachArgoCDThroughTheChartsValues() throws {
        let p = try load("{repoURL: \"git@git.example.com:ops/apps.git\", path: apps, knownHosts: [\"git.example.com ssh-ed25519 \(Self.key)\"]}")
        let chart = try #require(try ClusterRender.all(p, secrets: .redacted).first { $0.ref.plural == "helmcharts" && $0.ref.name == "argocd" })
        let values = try YAMLParser().parseDocument(Array((chart.body["spec"]?["valuesContent"]?.string ?? "").utf8), file: "values")
        #expect(JSONValue(values)["configs"]?["ssh"]?["extraHosts"]?.string == "git.example.com ssh-ed25519 \(Self.key)\n")
        #expect(JSONValue(values)["configs"]?["params"]?["x"]?.string == "y", "the release's own values stay")
    }
}

/// `plan -o json --out FILE` then `apply --plan FILE`: exactly that plan, or nothing.
@Suite("Saved plans", .serialized)
struct SavedPlanTests {
    @Test func applyPlanAppliesTheSavedPlanAndRefusesAStaleOne() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let state = lab.root + "/platform.yaml"
        try ("apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: vps-1}\nspec:\n  helmReleases:\n" + ClusterReconcilerTests.releases)
            .write(toFile: state, atomically: true, encoding: .utf8)
        let planFile = lab.root + "/plan.json"
        func plan() async throws -> CommandResult {
            try await Binary.run(["plan", "--state", state, "--only", "helm", "--kubeconfig", lab.kubeconfig, "--root", lab.root, "-o", "json", "--out", planFile])
        }
        let planned = try await plan()
        #expect(planned.exitCode == 2, "\(planned.stderr)")
        var st = stat()
        #expect(stat(planFile, &st) == 0 && st.st_mode & 0o777 == 0o600, "the plan file is 0600")
        let saved = try String(contentsOfFile: planFile, encoding: .utf8)
        #expect(saved.contains("\"format\":\"nodeagent-plan/v1\"") && saved.contains("\"only\":[\"helm\"]"), "\(saved)")
        #expect(!saved.contains("pg-Secret-7f3a9"), "no secret in a plan")

        // The node changes: another client creates one of the planned objects. Refused, nothing written.
        let stale = lab.server.requests.count
        lab.server.put(KubeTestServer.helmChart, namespace: "kube-system", .object([
            "apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChart"),
            "metadata": .object(["name": .string("argocd"), "namespace": .string("kube-system")]), "spec": .object(["chart": .string("other")]),
        ]))
        let refused = try await Binary.run(["apply", "--plan", planFile])
        #expect(refused.exitCode == 1 && refused.stderr.contains("the plan is stale: the node changed since the plan was made"), "\(refused.stderr)")
        #expect(refused.stderr.contains("helm: now"), "\(refused.stderr)")
        #expect(!lab.server.requests.dropFirst(stale).contains { $0.hasPrefix("PATCH") || $0.hasPrefix("DELETE") }, "nothing applied")

        // A fresh plan applies: exactly its changes, with no other flag.
        _ = try await plan()
        let applied = try await Binary.run(["apply", "--plan", planFile])
        #expect(applied.stdout.contains("3 changes applied"), "\(applied.stdout)\(applied.stderr)")
        #expect(lab.chart("postgresql") != nil && lab.chart("argocd")?["spec"]?["chart"]?.string == "argo-cd")

        // The desired state changes after the plan: refused too.
        _ = try await plan()
        try (try String(contentsOfFile: state, encoding: .utf8)).replacingOccurrences(of: "size: 20Gi", with: "size: 30Gi").write(toFile: state, atomically: true, encoding: .utf8)
        let edited = try await Binary.run(["apply", "--plan", planFile])
        #expect(edited.exitCode == 1 && edited.stderr.contains("changed since the plan was made (sha256"), "\(edited.stderr)")
        // A plan carries its own selection and flags.
        let mixed = try await Binary.run(["apply", "--plan", planFile, "--only", "helm"])
        #expect(mixed.exitCode == 1 && mixed.stderr.contains("--plan carries its own"), "\(mixed.stderr)")
        // A plan in which a reconciler could not plan (no cluster to ask) is not applied at all.
        let broken = try await Binary.run(["plan", "--state", state, "--only", "helm", "--kubeconfig", lab.root + "/missing.yaml", "--root", lab.root,
                                           "-o", "json", "--out", planFile])
        #expect(broken.exitCode == 1)
        let writes = lab.writes.count
        let unplanned = try await Binary.run(["apply", "--plan", planFile])
        #expect(unplanned.exitCode == 1 && unplanned.stderr.contains("reconcilers that could not plan: helm"), "\(unplanned.stderr)")
        #expect(lab.writes.count == writes)
    }
}
