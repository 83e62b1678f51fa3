import Foundation
import Testing
import TestSupport
import KubeTestServer
import KubeClient
import Reconcilers
@testable import NodeAgent
import YAML

@Suite("Alerting: generated config and rules checked by amtool and promtool, mail through a real Alertmanager", .serialized)
struct AlertingTests {
    let runner = SystemCommandRunner()

    static func platform(smtpPort: Int = 587, host: String = "smtp.example.com", requireTLS: Bool = true) throws -> Platform {
        let text = """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              helmReleases:
                - {name: monitoring, chart: kube-prometheus-stack, repo: https://prometheus-community.github.io/helm-charts, version: 67.4.0, namespace: monitoring}
              alerting:
                release: monitoring
                email: {to: [ops@example.com, oncall@example.com], from: alerts@example.com, smarthost: "\(host):\(smtpPort)",
                        username: alerts, passwordFile: /etc/nodeagent/secrets/smtp-password, requireTLS: \(requireTLS)}
              backups:
                postgres:
                  connection: {host: 127.0.0.1}
                  databases: [app]
                  schedule: "0 3 * * *"
                  restoreDrill: {schedule: "0 4 * * 0"}
                offsite: {repository: /mnt/offsite, passwordFile: /etc/nodeagent/secrets/restic-password}
              status: {listen: "10.8.0.1:9430"}
            """
        return try DesiredStateLoader.load(Array(text.utf8), file: "platform.yaml")
    }

    func write(_ value: JSONValue, _ path: String) throws {
        try value.yamlText.write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test func alertmanagerAcceptsTheGeneratedConfig() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "s3cret\n".write(toFile: dir + "/password", atomically: true, encoding: .utf8)
        let email = try #require(try Self.platform().spec.alerting?.email)
        for (name, config) in [("email", AlertingConfig.alertmanager(email, passwordPath: dir + "/password")),
                               ("none", AlertingConfig.alertmanager(nil))] {
            try write(config, "\(dir)/\(name).yml")
            let r = try await runner.run(Command("amtool", ["check-config", "\(dir)/\(name).yml"]))
            #expect(r.exitCode == 0, "\(name): \(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("SUCCESS"))
        }
        let text = AlertingConfig.alertmanager(email).yamlText
        #expect(text.contains("smtp_auth_password_file: /etc/alertmanager/secrets/nodeagent-alertmanager-smtp/password"))
        #expect(!text.contains("s3cret"))
        // The check can fail: a wrong key is refused.
        try (text + "surprise: 1\n").write(toFile: dir + "/bad.yml", atomically: true, encoding: .utf8)
        #expect(try await runner.run(Command("amtool", ["check-config", dir + "/bad.yml"])).exitCode == 1)
    }

    /// What each alert needs to fire (series for promtool, 1-minute steps), when it must fire,
    /// and a healthy series on which it must stay silent.
    struct Case {
        var alert: String
        var firing: [(String, String)]
        var healthy: [(String, String)]
        var at: String
        var labels: [String: String]
        /// The series' step and the rule evaluation interval (long windows use hours).
        var interval = "1m"
    }

    static let cases: [Case] = [
        Case(alert: "NodeagentDown", firing: [("up{job=\"nodeagent\",instance=\"n\"}", "0x20")], healthy: [("up{job=\"nodeagent\",instance=\"n\"}", "1x20")],
             at: "10m", labels: ["job": "nodeagent", "instance": "n", "severity": "critical"]),
        Case(alert: "NodeagentNotScraped", firing: [("up{job=\"other\"}", "1x20")], healthy: [("up{job=\"nodeagent\"}", "1x20")],
             at: "15m", labels: ["job": "nodeagent", "severity": "critical"]),
        Case(alert: "NodeagentReconcileFailing", firing: [("nodeagent_reconciler_ready{reconciler=\"helm\"}", "0x30")],
             healthy: [("nodeagent_reconciler_ready{reconciler=\"helm\"}", "1x30")], at: "20m", labels: ["reconciler": "helm", "severity": "warning"]),
        Case(alert: "NodeagentNeedsAPerson", firing: [("nodeagent_reconciler_stalled{reconciler=\"os\"}", "1x20")],
             healthy: [("nodeagent_reconciler_stalled{reconciler=\"os\"}", "0x20")], at: "10m", labels: ["reconciler": "os", "severity": "warning"]),
        Case(alert: "NodeagentDesiredStateNotApplied", firing: [("nodeagent_converged", "0x40")], healthy: [("nodeagent_converged", "1x40")],
             at: "35m", labels: ["severity": "warning"]),
        Case(alert: "NodeagentSourceFailing", firing: [("nodeagent_source_up", "0x40")], healthy: [("nodeagent_source_up", "1x40")],
             at: "35m", labels: ["severity": "warning"]),
        Case(alert: "NodeNotReady", firing: [("kube_node_status_condition{condition=\"Ready\",status=\"true\",node=\"vps-1\"}", "0x20")],
             healthy: [("kube_node_status_condition{condition=\"Ready\",status=\"true\",node=\"vps-1\"}", "1x20")], at: "10m",
             labels: ["condition": "Ready", "status": "true", "node": "vps-1", "severity": "critical"]),
        // 10 GB disk, 1.2 GB free, losing 2 MB a minute (full in 10 h): fires. Same but steady: silent.
        Case(alert: "NodeDiskFillingUp",
             firing: [("node_filesystem_avail_bytes{fstype=\"ext4\",mountpoint=\"/\",instance=\"n\"}", "1200000000-2000000x120"),
                      ("node_filesystem_size_bytes{fstype=\"ext4\",mountpoint=\"/\",instance=\"n\"}", "10000000000x120")],
             healthy: [("node_filesystem_avail_bytes{fstype=\"ext4\",mountpoint=\"/\",instance=\"n\"}", "1200000000x120"),
                       ("node_filesystem_size_bytes{fstype=\"ext4\",mountpoint=\"/\",instance=\"n\"}", "10000000000x120")],
             at: "100m", labels: ["fstype": "ext4", "mountpoint": "/", "instance": "n", "severity": "critical"]),
        Case(alert: "WireGuardInterfaceDown", firing: [("nodeagent_wireguard_up{interface=\"wg0\"}", "0x20")],
             healthy: [("nodeagent_wireguard_up{interface=\"wg0\"}", "1x20")], at: "10m", labels: ["interface": "wg0", "severity": "critical"]),
        // Expiry at 10 days from the test's t=0, or at 60 days.
        Case(alert: "K3sCertificateExpiringSoon", firing: [("nodeagent_k3s_certificate_expiry_timestamp_seconds{file=\"serving-kube-apiserver.crt\"}", "864000x120")],
             healthy: [("nodeagent_k3s_certificate_expiry_timestamp_seconds{file=\"serving-kube-apiserver.crt\"}", "5184000x120")],
             at: "90m", labels: ["file": "serving-kube-apiserver.crt", "severity": "critical"]),
        // Daily backups: older than 25 h is overdue. The last success at t=0, never again; or renewed every day.
        Case(alert: "NodeagentBackupTooOld", firing: [("nodeagent_backup_last_success_timestamp_seconds{database=\"app\"}", "0x1800")],
             healthy: [("nodeagent_backup_last_success_timestamp_seconds{database=\"app\"}", "0x1400 86400x400")],
             at: "27h", labels: ["database": "app", "severity": "critical"]),
        Case(alert: "NodeagentBackupFailing", firing: [("nodeagent_backup_last_result_ok{database=\"app\"}", "0x20")],
             healthy: [("nodeagent_backup_last_result_ok{database=\"app\"}", "1x20")], at: "15m", labels: ["database": "app", "severity": "warning"]),
        // Weekly drills: older than 8 days (a week plus a day) is overdue.
        Case(alert: "NodeagentRestoreDrillTooOld", firing: [("nodeagent_restore_drill_last_success_timestamp_seconds", "0x200")],
             healthy: [("nodeagent_restore_drill_last_success_timestamp_seconds", "0x100 600000x100")],
             at: "194h", labels: ["severity": "warning"], interval: "1h"),
        // Copies after the daily backups: older than 25 h is overdue.
        Case(alert: "NodeagentOffsiteBackupTooOld", firing: [("nodeagent_offsite_last_success_timestamp_seconds", "0x1800")],
             healthy: [("nodeagent_offsite_last_success_timestamp_seconds", "0x1400 86400x400")], at: "27h", labels: ["severity": "critical"]),
        Case(alert: "NodeagentOffsiteCopyFailing", firing: [("nodeagent_offsite_last_result_ok", "0x20")],
             healthy: [("nodeagent_offsite_last_result_ok", "1x20")], at: "15m", labels: ["severity": "warning"]),
        Case(alert: "NodeagentOffsiteCheckFailed", firing: [("nodeagent_offsite_check_ok", "0x10")],
             healthy: [("nodeagent_offsite_check_ok", "1x10")], at: "5m", labels: ["severity": "critical"]),
        Case(alert: "NodeagentRestoreDrillFailed", firing: [("nodeagent_restore_drill_last_result_ok", "0x10")],
             healthy: [("nodeagent_restore_drill_last_result_ok", "1x10")], at: "5m", labels: ["severity": "critical"]),
    ]

    @Test func rulesPassPromtoolAndEachAlertFiresOnlyOnItsCondition() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let groups = AlertingConfig.ruleGroups(try Self.platform())
        try write(.object(["groups": groups]), dir + "/rules.yml")
        let check = try await runner.run(Command("promtool", ["check", "rules", dir + "/rules.yml"]))
        #expect(check.exitCode == 0, "\(check.stdout)\(check.stderr)")
        let alerts = (groups.array?.first?["rules"]?.array ?? []).compactMap { $0["alert"]?.string }
        #expect(check.stdout.contains("SUCCESS: \(alerts.count) rules found"), "\(check.stdout)")
        // Every rule has a case, and the unit tests judge expressions, durations and labels
        // (annotations are templates for people and are left out of the comparison).
        #expect(Set(alerts).subtracting(Self.cases.map(\.alert)).isEmpty)
        var bare = groups
        bare = .array((groups.array ?? []).map { g in
            var g = g
            g[["rules"]] = .array((g["rules"]?.array ?? []).map { r in var r = r; r[["annotations"]] = nil; return r })
            return g
        })
        try write(.object(["groups": bare]), dir + "/bare.yml")
        var tests: [String: [JSONValue]] = [:]
        for c in Self.cases {
            for (series, firing) in [(c.firing, true), (c.healthy, false)] {
                tests[c.interval, default: []].append(.object([
                    "interval": .string(c.interval),
                    "input_series": .array(series.map { .object(["series": .string($0.0), "values": .string($0.1)]) }),
                    "alert_rule_test": .array([.object([
                        "eval_time": .string(c.at), "alertname": .string(c.alert),
                        "exp_alerts": .array(firing ? [.object(["exp_labels": Self.labels(c)])] : []),
                    ])]),
                ]))
            }
        }
        for (interval, group) in tests.sorted(by: { $0.key < $1.key }) {
            try write(.object(["rule_files": .array([.string("bare.yml")]), "evaluation_interval": .string(interval), "tests": .array(group)]),
                      dir + "/tests-\(interval).yml")
            let unit = try await runner.run(Command("promtool", ["test", "rules", dir + "/tests-\(interval).yml"], timeout: .seconds(120)))
            #expect(unit.exitCode == 0, "\(interval): \(unit.stdout)\(unit.stderr)")
            #expect(unit.stdout.contains("SUCCESS"))
        }
        let minute = tests["1m"] ?? []
        // And the unit tests can fail: a healthy series that expects an alert does.
        var wrong = minute
        wrong[1][["alert_rule_test"]] = minute[0]["alert_rule_test"]
        try write(.object(["rule_files": .array([.string("bare.yml")]), "evaluation_interval": .string("1m"), "tests": .array(wrong)]),
                  dir + "/wrong.yml")
        #expect(try await runner.run(Command("promtool", ["test", "rules", dir + "/wrong.yml"], timeout: .seconds(120))).exitCode == 1)
    }

    /// `nodeagent alerts test` → a real Alertmanager with the generated config → an SMTP server
    /// that demands the password from the file: the email arrives with the expected subject.
    @Test func aTestAlertArrivesByEmail() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let smtpPort = TLSTestPeer.freePort(), amPort = TLSTestPeer.freePort()
        let password = "smtp-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir + "/mail", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/root/etc/nodeagent/secrets", withIntermediateDirectories: true)
        // As the mounted Secret holds it: nodeagent drops the secret file's final newline.
        try password.write(toFile: dir + "/password", atomically: true, encoding: .utf8)
        let platform = try Self.platform(smtpPort: smtpPort, host: "127.0.0.1", requireTLS: false)
        try write(AlertingConfig.alertmanager(platform.spec.alerting?.email, passwordPath: dir + "/password"), dir + "/alertmanager.yml")
        let sink = try DetachedProcess.spawn(["/usr/bin/python3", Fixtures.repository + "/Tests/Fixtures/alerting/smtp_sink.py", String(smtpPort),
                                              dir + "/mail", "alerts", password], output: dir + "/sink.log")
        defer { DetachedProcess.stop(sink) }
        let am = try DetachedProcess.spawn(["/usr/bin/prometheus-alertmanager", "--config.file=\(dir)/alertmanager.yml",
                                            "--storage.path=\(dir)/data", "--web.listen-address=127.0.0.1:\(amPort)",
                                            "--cluster.listen-address="], output: dir + "/alertmanager.log")
        defer { DetachedProcess.stop(am) }
        for _ in 0..<100 { if (TLSTestPeer.canConnect(amPort) && TLSTestPeer.canConnect(smtpPort)) { break }; try await Task.sleep(for: .milliseconds(100)) }
        let state = dir + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              helmReleases:
                - {name: monitoring, chart: kube-prometheus-stack, repo: https://prometheus-community.github.io/helm-charts, version: 67.4.0, namespace: monitoring}
              alerting:
                email: {to: ops@example.com, from: alerts@example.com, smarthost: "127.0.0.1:\(smtpPort)", requireTLS: false}
            """.write(toFile: state, atomically: true, encoding: .utf8)
        let r = try await Binary.run(["alerts", "test", "--state", state, "--alertmanager", "http://127.0.0.1:\(amPort)"])
        #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("accepted NodeagentTestAlert (severity critical): expect an email to ops@example.com"))
        var mail = ""
        for _ in 0..<150 where mail.isEmpty {
            try await Task.sleep(for: .milliseconds(200))
            if let first = try FileManager.default.contentsOfDirectory(atPath: dir + "/mail").sorted().first {
                mail = try String(contentsOfFile: dir + "/mail/" + first, encoding: .utf8)
            }
        }
        let log = (try? String(contentsOfFile: dir + "/alertmanager.log", encoding: .utf8)) ?? ""
        #expect(mail.contains("Subject: [FIRING:1] NodeagentTestAlert"), "\(mail)\n--- alertmanager:\n\(log.suffix(2000))")
        #expect(mail.contains("To: ops@example.com, oncall@example.com"))
        // An Alertmanager that does not answer is reported as such.
        let refused = try await Binary.run(["alerts", "test", "--state", state, "--alertmanager", "http://127.0.0.1:1"])
        #expect(refused.exitCode == 1 && refused.stderr.contains("cannot reach Alertmanager"))
    }

    /// The Watchdog (always firing) goes to the heartbeat's second check through a real
    /// Alertmanager. Debian's Alertmanager is 0.25, which lacks `url_file` (v0.26+): delivery is
    /// proven with the inline `url` form; what nodes get — `url_file` from the mounted Secret,
    /// the v0.28.1 image — is checked as rendered, against upstream's field names only.
    @Test func theWatchdogReachesTheHeartbeatWatcher() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let receiver = try await HeartbeatTests.Receiver.start(in: dir)
        defer { receiver.stop() }
        let amPort = TLSTestPeer.freePort()
        let watcher = "http://127.0.0.1:\(receiver.port)/ping/watchdog-check"
        try write(AlertingConfig.alertmanager(nil, watchdog: .url(watcher)), dir + "/alertmanager.yml")
        let lint = try await runner.run(Command("amtool", ["check-config", dir + "/alertmanager.yml"]))
        #expect(lint.exitCode == 0, "\(lint.stdout)\(lint.stderr)")
        let am = try DetachedProcess.spawn(["/usr/bin/prometheus-alertmanager", "--config.file=\(dir)/alertmanager.yml",
                                            "--storage.path=\(dir)/data", "--web.listen-address=127.0.0.1:\(amPort)",
                                            "--cluster.listen-address="], output: dir + "/alertmanager.log")
        defer { DetachedProcess.stop(am) }
        for _ in 0..<100 { if TLSTestPeer.canConnect(amPort) { break }; try await Task.sleep(for: .milliseconds(100)) }
        // What the chart's rule sends: Watchdog, severity none.
        let post = try await runner.run(Command("curl", ["-s", "-f", "-XPOST", "-H", "Content-Type: application/json",
                                                         "--data-binary", #"[{"labels":{"alertname":"Watchdog","severity":"none"}}]"#,
                                                         "http://127.0.0.1:\(amPort)/api/v2/alerts"]))
        #expect(post.exitCode == 0, "\(post.stderr)")
        let pings = try await receiver.await(1)
        let log = (try? String(contentsOfFile: dir + "/alertmanager.log", encoding: .utf8)) ?? ""
        #expect(pings.first?.hasPrefix("POST /ping/watchdog-check ") == true && pings.first?.contains("\"alertname\":\"Watchdog\"") == true,
                "\(pings)\n\(log.suffix(1500))")

        // What a node gets: the URL from a file (never in the config), the Secret that holds
        // it, and an Alertmanager whose url_file webhook does not panic on a non-2xx answer.
        let state = dir + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              helmReleases:
                - {name: monitoring, chart: kube-prometheus-stack, repo: https://prometheus-community.github.io/helm-charts, version: 67.4.0, namespace: monitoring}
              alerting: {}
              heartbeat: {urlFile: /etc/nodeagent/secrets/heartbeat-url, watchdogUrlFile: /etc/nodeagent/secrets/watchdog-url}
            """.write(toFile: state, atomically: true, encoding: .utf8)
        let fs = RootedFileSystem(root: dir + "/root")
        try fs.write("/etc/nodeagent/secrets/watchdog-url", Array("https://hc-ping.com/secret-watchdog-uuid\n".utf8), mode: 0o600)
        let platform = try DesiredStateLoader.load(path: state)
        let objects = try ClusterRender.alerting(platform, secrets: .files(fs))
        let values = try #require(objects.first?.body["spec"]?["valuesContent"]?.string)
        #expect(values.contains("url_file: \(AlertingConfig.mountedWatchdogURLPath)") && values.contains("receiver: heartbeat-watchdog"), "\(values)")
        #expect(values.contains("tag: v0.28.1") && values.contains("- nodeagent-heartbeat"), "\(values)")
        #expect(!values.contains("secret-watchdog-uuid"), "the URL is in no config")
        let secret = try #require(objects.first { $0.ref.name == AlertingConfig.watchdogSecretName })
        #expect(secret.body["data"]?["url"]?.string == Data("https://hc-ping.com/secret-watchdog-uuid".utf8).base64EncodedString())
        // `nodeagent render` shows where it would come from, not what it is.
        let redacted = try ClusterRender.alerting(platform, secrets: .redacted)
        #expect(!redacted.map(\.body.jsonText).joined().contains("secret-watchdog-uuid"))
    }

    /// A real Prometheus scrapes a running nodeagent's /metrics.
    @Test func prometheusScrapesNodeagent() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agentPort = TLSTestPeer.freePort(), promPort = TLSTestPeer.freePort()
        let agent = try DetachedProcess.spawn([Binary.path, "run", "--state", Fixtures.desiredState + "/valid/minimal.yaml", "--root", dir,
                                               "--listen", "127.0.0.1:\(agentPort)"], output: dir + "/agent.log")
        defer { DetachedProcess.stop(agent) }
        try """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: nodeagent
                static_configs: [{targets: ["127.0.0.1:\(agentPort)"]}]
            """.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        let prometheus = try DetachedProcess.spawn(["/usr/bin/prometheus", "--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/tsdb",
                                                    "--web.listen-address=127.0.0.1:\(promPort)"], output: dir + "/prometheus.log")
        defer { DetachedProcess.stop(prometheus) }
        func query(_ q: String) async throws -> JSONValue? {
            let r = try await runner.run(Command("curl", ["-s", "--max-time", "2", "-G", "--data-urlencode", "query=\(q)",
                                                          "http://127.0.0.1:\(promPort)/api/v1/query"]))
            return JSONValue.parse(Array(r.stdout.utf8))?["data"]?["result"]?.array?.first
        }
        var up: JSONValue?
        for _ in 0..<100 {
            up = try await query("up{job=\"nodeagent\"}")
            if up?["value"]?.array?.last?.string == "1" { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(up?["value"]?.array?.last?.string == "1", "\((try? String(contentsOfFile: dir + "/prometheus.log", encoding: .utf8))?.suffix(1500) ?? "")")
        #expect(try await query("nodeagent_converged")?["value"]?.array?.last?.string == "1")
        #expect(try await query("nodeagent_last_pass_timestamp_seconds") != nil)
    }

    @Test func theReconcilerAppliesValuesAtOnceAndRulesOnceTheCRDsExist() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        try lab.writeSecret("/etc/nodeagent/secrets/smtp-password", "smtp-pw-8842\n")
        let platform = try Self.platform()
        let engine = try Engine(BuiltInReconcilers.all(on: Reconcilers.Host(root: lab.root), options: PassOptions(kubeconfig: lab.kubeconfig)))
        // Before the chart's install made its namespace: only the values go in (kube-system).
        let early = try #require(await engine.apply(platform, only: [.alerting]).first)
        #expect(early.changes.map(\.subject) == ["helmchartconfig kube-system/monitoring"])
        #expect(early.condition?.reason == "WaitingForNamespace")
        lab.server.put(KubeTestServer.builtIn[0], .object(["apiVersion": .string("v1"), "kind": .string("Namespace"),
                                                           "metadata": .object(["name": .string("monitoring")])]))
        let entry = try #require(await engine.apply(platform, only: [.alerting]).first)
        #expect(entry.changes.map(\.subject) == ["secret monitoring/nodeagent-alertmanager-smtp", "service monitoring/nodeagent",
                                                 "endpoints monitoring/nodeagent", "configmap monitoring/nodeagent-dashboard"],
                "\(entry)")
        #expect(entry.condition?.reason == "CRDNotEstablished")
        let hcc = try #require(lab.server.object("helmchartconfigs", namespace: "kube-system", name: "monitoring", groupVersion: "helm.cattle.io/v1"))
        let values = try #require(hcc["spec"]?["valuesContent"]?.string)
        #expect(values.contains("kubeControllerManager:\n  enabled: false"))
        let parsed = JSONValue(try YAMLParser().parseDocument(Array(values.utf8), file: "values"))
        #expect(parsed["alertmanager"]?["alertmanagerSpec"]?["secrets"] == .array([.string("nodeagent-alertmanager-smtp")]))
        #expect(parsed["kubeEtcd"]?["enabled"] == .bool(false))
        #expect(!values.contains("smtp-pw-8842"))
        let smtp = try #require(lab.server.object("secrets", namespace: "monitoring", name: "nodeagent-alertmanager-smtp"))
        #expect(KubeViews.secretData(smtp)["password"] == Array("smtp-pw-8842".utf8))
        let endpoints = try #require(lab.server.object("endpoints", namespace: "monitoring", name: "nodeagent"))
        #expect(endpoints["subsets"]?.array?.first?["addresses"]?.array?.first?["ip"]?.string == "10.8.0.1")
        // The chart's CRDs arrive: the rules and the ServiceMonitor follow, labelled for the release.
        for (plural, kind) in [("prometheusrules", "PrometheusRule"), ("servicemonitors", "ServiceMonitor")] {
            lab.server.register(.init(group: "monitoring.coreos.com", version: "v1", kind: kind, plural: plural, namespaced: true))
            lab.server.put(KubeTestServer.builtIn.first { $0.plural == "customresourcedefinitions" }!, .object([
                "apiVersion": .string("apiextensions.k8s.io/v1"), "kind": .string("CustomResourceDefinition"),
                "metadata": .object(["name": .string("\(plural).monitoring.coreos.com")]),
                "status": .object(["conditions": .array([.object(["type": .string("Established"), "status": .string("True")])])]),
            ]))
        }
        let second = try #require(await engine.apply(platform, only: [.alerting]).first)
        #expect(second.changes.map(\.subject) == ["prometheusrule monitoring/nodeagent", "servicemonitor monitoring/nodeagent"])
        let rule = try #require(lab.server.object("prometheusrules", namespace: "monitoring", name: "nodeagent", groupVersion: "monitoring.coreos.com/v1"))
        #expect(rule["metadata"]?["labels"]?["release"]?.string == "monitoring")
        #expect(second.condition?.reason == "NotApplied", "the release itself is not installed in this test: \(String(describing: second.condition))")
        let before = lab.writes.count
        _ = await engine.apply(platform, only: [.alerting])
        #expect(lab.writes.count == before, "idempotent")
    }
}

@Suite("K3s certificate expiry, read from PEM")
struct CertificateExpiryTests {
    @Test func notAfterMatchesOpenSSL() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await SystemCommandRunner().check(Command("python3", [Fixtures.repository + "/Tests/Fixtures/pki/make.py", dir]))
        // One more certificate valid until after 2049: its notAfter is a GeneralizedTime.
        try await SystemCommandRunner().check(Command("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                                                  "-subj", "/CN=long", "-days", "10000", "-keyout", dir + "/long.key", "-out", dir + "/long.pem"]))
        let pems = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".pem") && !$0.contains("key") }
        var checked: [String: String] = [:]
        for name in pems {
            let out = try await SystemCommandRunner().run(Command("openssl", ["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", dir + "/" + name]))
            guard out.exitCode == 0 else { continue }   // a key, not a certificate
            // notAfter=2027-11-26 21:00:00Z
            let iso = out.stdout.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: " ", with: "T") }
            let pem = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/" + name)))
            #expect(Certificates.notAfter(pem: pem)?.rfc3339 == iso, "\(name)")
            checked[name] = iso
        }
        #expect(checked.count >= 4, "\(checked)")
        #expect(checked["long.pem"]?.hasPrefix("20") == true && (checked["long.pem"] ?? "") > "2050", "GeneralizedTime: \(checked)")
        // A chain file: the first certificate counts.
        let chain = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/long.pem"))) + [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/" + pems.first { $0 != "long.pem" && checked[$0] != nil }!)))
        #expect(Certificates.notAfter(pem: chain)?.rfc3339 == checked["long.pem"])
    }
}

extension AlertingTests {
    /// The labels an alert must carry, `alertname` included.
    static func labels(_ c: Case) -> JSONValue {
        .object(c.labels.sorted { $0.key < $1.key }.map { JSONValue.Member($0.key, .string($0.value)) })
    }
}
