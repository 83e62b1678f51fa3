import Foundation
import Testing
import TestSupport
import KubeTestServer
import Reconcilers
import YAML

/// Distinctive secrets planted in every secret file the cluster and backup sections read; every
/// command and the daemon's endpoints run over them; none of what they print, log or serve may
/// hold a secret, plain or base64.
@Suite("Secret hygiene: planted secrets never appear in output, logs, /status or /metrics", .serialized)
struct SecretHygieneTests {
    static let secrets = [
        "postgres-password": "PLANTED-pg-1f9e4c",
        "smtp-password": "PLANTED-smtp-7a2c91",
        "api-token": "PLANTED-token-55d0aa",
        "git-token": "PLANTED-git-9c3b17",
        // Ping URLs are capabilities: loopback port 1, where nothing answers (no traffic leaves).
        "heartbeat-url": "http://127.0.0.1:1/ping/PLANTED-hb-3e8d21",
        "watchdog-url": "http://127.0.0.1:1/ping/PLANTED-wd-6b1f04",
    ]

    /// Each secret, and its base64 at the three alignments it can have inside a longer encoding.
    static var needles: [String] {
        secrets.values.flatMap { s -> [String] in
            // A URL's secret part alone counts too (its host may be shown).
            var out = s.contains("://") ? [s, String(s.split(separator: "/").last ?? "")] : [s]
            for pad in ["", "x", "xx"] {
                let encoded = Data((pad + s).utf8).base64EncodedString()
                let skip = pad.isEmpty ? 0 : 4   // the characters that still carry the padding bytes
                out.append(String(encoded.dropFirst(skip).dropLast(4)))
            }
            return out
        }
    }

    func leaks(_ text: String) -> [String] { Self.needles.filter { text.contains($0) } }

    @Test func noCommandOrEndpointShowsASecret() async throws {
        let lab = try await ClusterLab()
        defer { lab.stop() }
        let server = try await PostgresServer()
        for (name, value) in Self.secrets { try lab.writeSecret("/etc/nodeagent/secrets/\(name)", value + "\n") }
        try await server.sql("CREATE DATABASE app")
        try await server.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);", db: "app")
        // The database's real password is the planted one (from here on psql cannot log in).
        try await server.sql("ALTER ROLE postgres PASSWORD '\(Self.secrets["postgres-password"]!)'")
        let state = lab.root + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              helmReleases:
                - {name: argocd, chart: argo-cd, repo: https://argoproj.github.io/argo-helm, version: 7.7.11, namespace: argocd}
                - name: monitoring
                  chart: kube-prometheus-stack
                  repo: https://prometheus-community.github.io/helm-charts
                  version: 67.4.0
                  namespace: monitoring
                - name: postgresql
                  chart: postgresql
                  repo: https://charts.bitnami.com/bitnami
                  version: 16.3.0
                  namespace: db
                  valuesSecrets: [{key: auth.postgresPassword, file: /etc/nodeagent/secrets/postgres-password}]
              argocd:
                appOfApps: {repoURL: "https://git.example.com/apps.git", path: apps, username: deploy, passwordFile: /etc/nodeagent/secrets/git-token}
              alerting:
                email: {to: ops@example.com, from: alerts@example.com, smarthost: "smtp.example.com:587", username: alerts,
                        passwordFile: /etc/nodeagent/secrets/smtp-password}
              backups:
                postgres:
                  connection: {host: 127.0.0.1, port: \(server.port), user: postgres, passwordFile: /etc/nodeagent/secrets/postgres-password, sslmode: disable}
                  databases: [app]
                  schedule: "0 3 * * *"
                  restoreDrill: {schedule: "0 4 * * 0"}
              status: {listen: "127.0.0.1:\(TLSTestPeer.freePort())", tokenFile: /etc/nodeagent/secrets/api-token}
              heartbeat: {urlFile: /etc/nodeagent/secrets/heartbeat-url, interval: 1s, watchdogUrlFile: /etc/nodeagent/secrets/watchdog-url}
            """.write(toFile: state, atomically: true, encoding: .utf8)

        let cluster = ["--kubeconfig", lab.kubeconfig, "--root", lab.root]
        var outputs: [(String, String)] = []
        for args in [
            ["validate", state],
            ["render", "--state", state],
            ["plan", "--state", state, "--only", "helm,alerting,argocd,backups"] + cluster,
            ["plan", "--state", state, "--only", "helm,alerting,argocd,backups", "-o", "json"] + cluster,
            ["apply", "--state", state, "--only", "helm,alerting,argocd,backups"] + cluster,
            ["apply", "--state", state, "--only", "helm,alerting,argocd,backups", "-o", "json"] + cluster,
            ["backup", "run", "--state", state, "--root", lab.root],
            ["backup", "list", "--state", state, "--root", lab.root, "-o", "json"],
            ["backup", "drill", "--state", state, "--root", lab.root],
        ] {
            let r = try await Binary.run(args)
            if args.prefix(2) == ["backup", "run"] { #expect(r.exitCode == 0, "the backup must really have logged in: \(r.stdout)\(r.stderr)") }
            outputs.append((args.joined(separator: " "), r.stdout + r.stderr))
        }
        // A wrong password is reported without the password.
        try lab.writeSecret("/etc/nodeagent/secrets/postgres-password", "PLANTED-pg-wrong-d41d\n")
        let wrong = try await Binary.run(["backup", "run", "--state", state, "--root", lab.root])
        #expect(wrong.exitCode == 1)
        #expect(!(wrong.stdout + wrong.stderr).contains("PLANTED-pg-wrong-d41d"))
        try lab.writeSecret("/etc/nodeagent/secrets/postgres-password", Self.secrets["postgres-password"]! + "\n")

        // The daemon: its log, /status and /metrics (the cluster sections only: nothing on this host).
        let listen = try DesiredStateLoader.load(path: state).spec.status!.listen
        let pid = try DetachedProcess.spawn([Binary.path, "run", "--state", state, "--root", lab.root, "--poll", "1s"],
                                            output: lab.root + "/daemon.log")
        var status = "", metrics = ""
        for _ in 0..<300 where !metrics.contains("nodeagent_backup_last_success_timestamp_seconds") || !status.contains("\"backups\"") {
            try await Task.sleep(for: .milliseconds(200))
            status = (try? await SystemCommandRunner().run(Command("curl", ["-s", "http://\(listen.host):\(listen.port)/status"])))?.stdout ?? ""
            metrics = (try? await SystemCommandRunner().run(Command("curl", ["-s", "http://\(listen.host):\(listen.port)/metrics"])))?.stdout ?? ""
        }
        // A wrong token on POST /sync is refused without echoing anything secret.
        let sync = try await SystemCommandRunner().run(Command("curl", ["-s", "-i", "-X", "POST", "-H", "Authorization: Bearer nope",
                                                                        "http://\(listen.host):\(listen.port)/sync"]))
        DetachedProcess.stop(pid)
        _ = await DetachedProcess.waitForExit(pid, timeout: .seconds(10))
        #expect(status.contains("\"backups\""), "\(status)")
        #expect(metrics.contains("nodeagent_backup_last_success_timestamp_seconds"))
        let log = (try? String(contentsOfFile: lab.root + "/daemon.log", encoding: .utf8)) ?? ""
        outputs += [("daemon log", log), ("/status", status), ("/metrics", metrics), ("POST /sync", sync.stdout + sync.stderr)]
        // State files nodeagent writes for itself, which /status and the metrics come from.
        for file in ["/var/lib/nodeagent/backups/state.json", "/var/lib/nodeagent/applied/platform.yaml"] {
            if let text = try? String(contentsOfFile: lab.root + file, encoding: .utf8) {
                outputs.append((file, text))
            }
        }
        for (what, text) in outputs {
            #expect(leaks(text).isEmpty, "\(what) shows a secret: \(leaks(text))")
        }
        // The planted secrets did reach where they belong: the test can fail.
        let values = try #require(lab.server.object("secrets", namespace: "kube-system", name: "nodeagent-values-postgresql"))
        #expect(!leaks(values.jsonText).isEmpty, "the values Secret holds the password, base64")
        await server.stop()
    }
}

/// The status server under hostile clients: idle and trickling connections, oversized headers
/// and bodies, garbage, unknown methods and paths, bad tokens — while a good client keeps
/// reading /status.
@Suite("Hostile HTTP clients against the status server", .serialized)
struct HostileClientTests {
    @Test func statusStaysResponsiveAndMemoryBounded() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/etc/nodeagent/secrets", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/etc/nodeagent/secrets/api-token", contents: Data("right-token\n".utf8),
                                           attributes: [.posixPermissions: 0o600])
        let port = TLSTestPeer.freePort()
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              status: {listen: "127.0.0.1:\(port)", tokenFile: /etc/nodeagent/secrets/api-token}
            """.write(toFile: dir + "/platform.yaml", atomically: true, encoding: .utf8)
        let pid = try DetachedProcess.spawn([Binary.path, "run", "--state", dir + "/platform.yaml", "--root", dir], output: dir + "/daemon.log")
        defer { DetachedProcess.stop(pid) }
        for _ in 0..<400 { if TLSTestPeer.canConnect(port) { break }; try await Task.sleep(for: .milliseconds(100)) }
        let seed = UInt32.random(in: 0...UInt32.max)
        print("hostile clients: fuzz seed \(seed)")
        let r = try await SystemCommandRunner().run(Command("/usr/bin/python3", [Fixtures.repository + "/Tests/Fixtures/hostile/clients.py",
                                                                                 "127.0.0.1", String(port), String(seed), "2000"], timeout: .seconds(180)))
        let result = try #require(JSONValue.parse(Array(r.stdout.utf8)), "\(r.stdout)\(r.stderr)")
        func line(_ key: String) -> String { result[key]?.string ?? "?" }
        #expect(DetachedProcess.isRunning(pid), "the daemon survived")
        #expect(line("oversized_header").hasPrefix("HTTP/1.1 4") || line("oversized_header") == "(closed)", "\(result)")
        #expect(line("many_headers").hasPrefix("HTTP/1.1 4") || line("many_headers") == "(closed)", "\(result)")
        #expect(line("unknown_method").hasPrefix("HTTP/1.1 4"), "\(result)")
        #expect(line("unknown_path").hasPrefix("HTTP/1.1 404"), "\(result)")
        #expect(!line("garbage").hasPrefix("HTTP/1.1 2"), "\(result)")
        #expect(line("sync_no_token").hasPrefix("HTTP/1.1 401"), "\(result)")
        #expect(line("sync_wrong_token").hasPrefix("HTTP/1.1 401"), "\(result)")
        // A browser tricked by DNS rebinding names another host: refused.
        #expect(line("rebinding").hasPrefix("HTTP/1.1 421"), "\(result)")
        // 200 idle connections from one address: the server keeps its per-address cap of them.
        #expect((result["idle_open"]?.int ?? 999) <= 16, "\(result)")
        #expect(!line("oversized_body").hasPrefix("HTTP/1.1 2"), "\(result)")
        // 2000 mutated requests: every answer a well-formed status line or a closed connection,
        // never a 5xx, never a refused connection (the server stays up and listening).
        #expect(result["fuzz_requests"]?.int == 2000)
        #expect(result["fuzz_odd_count"]?.int == 0, "seed \(seed): \(result["fuzz_odd"]?.jsonText ?? "")")
        print("hostile clients: fuzz responses \(result["fuzz_responses"]?.jsonText ?? "")")
        // The good client kept being served, promptly, all along.
        let good = result["good_requests"]?.int ?? 0, ok = result["good_ok"]?.int ?? -1
        #expect(good >= 10 && ok == good, "\(result)")
        if case .double(let worst)? = result["good_max_seconds"] { #expect(worst < 2, "\(result)") }
        // Bounded descriptors: what the clients hold is capped, the rest stays for the loop.
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
        #expect(fds > 0 && fds < 400, "the daemon holds \(fds) descriptors")
        // Bounded memory: the resident set after the attacks.
        let rss = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        #expect(rss > 0 && rss < 200_000, "RSS \(rss) kB")
        // And a good client with the right token still gets its sync.
        let sync = try await SystemCommandRunner().run(Command("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H",
                                                                        "Authorization: Bearer right-token", "http://127.0.0.1:\(port)/sync"]))
        #expect(sync.stdout == "202")
    }
}
