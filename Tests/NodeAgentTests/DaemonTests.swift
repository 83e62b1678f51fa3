import Foundation
import Testing
import TestSupport
import Reconcilers
import YAML

/// "VPS in a box": `nodeagent run` in the vps namespace converging from a local Git repository;
/// the admin namespace talks to it over WireGuard; the internet namespace cannot reach it.
@Suite("The daemon end to end in network namespaces", .serialized)
struct DaemonTests {
    @Test func convergesFromGitAndAnswersOverWireGuardOnly() async throws {
        let lab = try await NetworkLab()
        var daemon: Int32?
        do {
            try await run(lab, &daemon)
        } catch {
            if let daemon { DetachedProcess.stop(daemon) }
            await lab.destroy()
            throw error
        }
        await lab.destroy()
    }

    func run(_ lab: NetworkLab, _ daemon: inout Int32?) async throws {
        let runner = SystemCommandRunner()
        let work = lab.root + "/repo"
        func git(_ args: [String]) async throws {
            try await runner.check(Command("git", ["-C", work, "-c", "user.name=T", "-c", "user.email=t@example.com"] + args))
        }
        let hostTests = HostReconcilerTests()
        let admin = try await hostTests.newKey(lab)
        let extra = try await hostTests.newKey(lab)
        let iface = "na\(lab.id)g"
        lab.track(wireguard: iface)
        func platform(_ peers: [HostReconcilerTests.Peer]) -> String {
            hostTests.platform(lab, peers: peers) + "  status: {listen: \"10.8.0.1:9430\", tokenFile: /etc/nodeagent/secrets/api-token}\n"
        }
        let adminPeer = HostReconcilerTests.Peer(name: "admin", publicKey: admin.publicKey, allowedIP: "10.8.0.2/32")
        try await runner.check(Command("git", ["init", "--quiet", "--initial-branch=main", work]))
        try platform([adminPeer]).write(toFile: work + "/platform.yaml", atomically: true, encoding: .utf8)
        try await git(["add", "platform.yaml"])
        try await git(["commit", "--quiet", "-m", "first"])
        let fs = RootedFileSystem(root: lab.root)
        try fs.write("/etc/nodeagent/secrets/api-token", Array("sync-token-123\n".utf8), mode: 0o600)
        try fs.write("/etc/nodeagent/agent.yaml", Array("""
            apiVersion: nodeagent/v1
            kind: AgentConfig
            source: {repo: "file://\(work)", ref: main, path: platform.yaml}
            intervals: {poll: 60s, drift: 5m}

            """.utf8), mode: 0o644)
        daemon = try DetachedProcess.spawn(["/bin/sh", "-c", "exec ip netns exec \(lab.vps) \"$0\" run --config \"$1\" --root \"$2\" 2>\"$2/daemon.log\"",
                                            Binary.path, lab.root + "/etc/nodeagent/agent.yaml", lab.root])
        // The first pass brings up WireGuard, then the server binds to 10.8.0.1.
        var up = false
        for _ in 0..<100 where !up {
            up = (try? await lab.run(lab.vps, ["curl", "-s", "--max-time", "1", "http://10.8.0.1:9430/healthz"]))?.stdout == "ok\n"
            if !up { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(up, "the daemon did not come up: \((try? String(contentsOfFile: lab.root + "/daemon.log", encoding: .utf8)) ?? "")")
        try await hostTests.connectAdmin(lab, state: work + "/platform.yaml", privateKey: admin.privateKey)

        func status() async throws -> JSONValue {
            let r = try await lab.run(lab.admin, ["curl", "-s", "--max-time", "3", "http://10.8.0.1:9430/status"])
            return try #require(JSONValue.parse(Array(r.stdout.utf8)), "status: \(r.stdout)")
        }
        func head() async throws -> String {
            try await runner.check(Command("git", ["-C", work, "rev-parse", "HEAD"])).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let first = try await status()
        #expect(first["applied"]?["commit"]?.string == (try await head()))
        #expect(first["converged"] == .bool(true))
        let metrics = try await lab.run(lab.admin, ["curl", "-s", "--max-time", "3", "http://10.8.0.1:9430/metrics"])
        #expect(metrics.stdout.contains("nodeagent_converged 1.0"))
        // The facts the alerting rules need: the WireGuard interface is up (the admin peer has
        // not shaken hands yet at this point, or has: either way no stale series).
        #expect(metrics.stdout.contains("nodeagent_wireguard_up{interface=\"\(iface)\"} 1"), "\(metrics.stdout)")
        let lint = try await runner.run(Command("promtool", ["check", "metrics"], input: Array(metrics.stdout.utf8)))
        #expect(lint.exitCode == 0 && lint.stdout.isEmpty && lint.stderr.isEmpty, "promtool: \(lint.stdout)\(lint.stderr)")
        // `nodeagent status` renders it for a person.
        let rendered = try await lab.run(lab.admin, [Binary.path, "status", "--url", "http://10.8.0.1:9430"])
        #expect(rendered.stdout.hasPrefix("lab  applied \(try await head().prefix(12))  converged\n"), "\(rendered.stdout)\(rendered.stderr)")
        let rows: [[String]] = rendered.stdout.split(separator: "\n").map { line in line.split(separator: " ").map(String.init) }
        let row = rows.first { $0.count > 2 && $0[0] == "wireguard" && $0[1] == "Ready" }
        #expect(row?.prefix(5) == ["wireguard", "Ready", "Converged", "public", "key"], "\(rendered.stdout)")
        let publicKey = try await lab.inside(lab.vps, ["wg", "show", iface, "public-key"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(rendered.stdout.contains("wireguard public key \(publicKey)\n"))
        // Only through the tunnel: the internet gets nothing on the status port.
        #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["9430"])["tcp/9430"] == false)

        // Commit a new peer and ask for a sync: applied in about a second.
        try platform([adminPeer, .init(name: "extra", publicKey: extra.publicKey, allowedIP: "10.8.0.3/32")])
            .write(toFile: work + "/platform.yaml", atomically: true, encoding: .utf8)
        try await git(["commit", "--quiet", "-am", "add a peer"])
        let unauthorized = try await lab.run(lab.admin, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "http://10.8.0.1:9430/sync"])
        #expect(unauthorized.stdout == "401")
        let sync = try await lab.run(lab.admin, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                                 "-H", "Authorization: Bearer sync-token-123", "http://10.8.0.1:9430/sync"])
        #expect(sync.stdout == "202")
        let second = try await head()
        var applied = false
        for _ in 0..<50 where !applied {
            applied = try await status()["applied"]?["commit"]?.string == second
            if !applied { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(applied)
        let peers = try await lab.inside(lab.vps, ["wg", "show", iface, "peers"]).stdout
        #expect(peers.contains(extra.publicKey))

        // An invalid commit: refused with its position, and the previous revision stays applied.
        try (platform([adminPeer]) + "  bogus: {}\n").write(toFile: work + "/platform.yaml", atomically: true, encoding: .utf8)
        try await git(["commit", "--quiet", "-am", "broken"])
        _ = try await lab.run(lab.admin, ["curl", "-s", "-X", "POST", "-H", "Authorization: Bearer sync-token-123", "http://10.8.0.1:9430/sync"])
        var refused: JSONValue?
        for _ in 0..<50 where refused == nil {
            let s = try await status()
            if s["source"]?["ok"] == .bool(false) { refused = s } else { try await Task.sleep(for: .milliseconds(100)) }
        }
        let errors = refused?["source"]?["errors"]?.array?.compactMap(\.string) ?? []
        #expect(errors.first?.hasPrefix("platform.yaml:") == true && errors.first?.contains("spec.bogus") == true, "\(errors)")
        #expect(refused?["applied"]?["commit"]?.string == second)
        // No secret in any response or in the log.
        let log = (try? String(contentsOfFile: lab.root + "/daemon.log", encoding: .utf8)) ?? ""
        let everything = log + (refused?.jsonText ?? "") + metrics.stdout
        #expect(!everything.contains("sync-token-123"))
        let key = try String(contentsOfFile: lab.root + "/etc/nodeagent/secrets/wg.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!everything.contains(key))

        // The state directory turns read-only (a full or failing disk): a valid commit cannot be
        // taken; the daemon says why, keeps serving and keeps the applied revision; writable
        // again, it applies the commit.
        // In the daemon's own mount namespace (`ip netns exec` made one; mounts made out here
        // after it started would not reach it).
        let stateDir = lab.root + "/var/lib/nodeagent"
        let inDaemon = ["nsenter", "-t", "\(daemon!)", "-m", "--"]
        try await runner.check(Command(inDaemon[0], Array(inDaemon.dropFirst()) + ["mount", "--bind", stateDir, stateDir]))
        try await runner.check(Command(inDaemon[0], Array(inDaemon.dropFirst()) + ["mount", "-o", "remount,ro,bind", stateDir]))
        try platform([adminPeer]).write(toFile: work + "/platform.yaml", atomically: true, encoding: .utf8)
        try await git(["commit", "--quiet", "-am", "remove the extra peer"])
        let third = try await head()
        var stuck: JSONValue?
        for _ in 0..<50 where stuck == nil {
            _ = try await lab.run(lab.admin, ["curl", "-s", "-X", "POST", "-H", "Authorization: Bearer sync-token-123", "http://10.8.0.1:9430/sync"])
            try await Task.sleep(for: .milliseconds(200))
            let s = try await status()
            if s.jsonText.contains("Read-only file system") { stuck = s }
        }
        let seen = try await status().jsonText
        #expect(stuck != nil, "no read-only error in /status: \(seen)")
        #expect(stuck?["applied"]?["commit"]?.string == second, "\(stuck?.jsonText ?? "")")
        #expect(try await lab.run(lab.admin, ["curl", "-s", "--max-time", "3", "http://10.8.0.1:9430/healthz"]).stdout == "ok\n")
        #expect(try await lab.inside(lab.vps, ["wg", "show", iface, "peers"]).stdout.contains(extra.publicKey), "nothing was applied")
        try await runner.check(Command(inDaemon[0], Array(inDaemon.dropFirst()) + ["umount", stateDir]))
        var recovered = false
        for _ in 0..<50 where !recovered {
            _ = try await lab.run(lab.admin, ["curl", "-s", "-X", "POST", "-H", "Authorization: Bearer sync-token-123", "http://10.8.0.1:9430/sync"])
            try await Task.sleep(for: .milliseconds(200))
            recovered = try await status()["applied"]?["commit"]?.string == third
        }
        let after = try await status().jsonText
        #expect(recovered, "\(after)")
        #expect(!(try await lab.inside(lab.vps, ["wg", "show", iface, "peers"]).stdout.contains(extra.publicKey)))

        // SIGTERM: a clean exit.
        if let pid = daemon { kill(pid, SIGTERM) }
        let code = await DetachedProcess.waitForExit(daemon!, timeout: .seconds(10))
        #expect(code == 0, "exit \(String(describing: code))\n\(log)")
        daemon = nil
    }

    @Test func killedInTheMiddleOfAPassThenRestartedItConverges() async throws {
        let lab = try await NetworkLab()
        var daemon: Int32?
        do {
            let hostTests = HostReconcilerTests()
            let admin = try await hostTests.newKey(lab)
            lab.track(wireguard: "na\(lab.id)g")
            let runner = SystemCommandRunner()
            let work = lab.root + "/repo"
            try await runner.check(Command("git", ["init", "--quiet", "--initial-branch=main", work]))
            try (hostTests.platform(lab, peers: [.init(name: "admin", publicKey: admin.publicKey, allowedIP: "10.8.0.2/32")])
                 + "  status: {listen: \"10.8.0.1:9430\"}\n").write(toFile: work + "/platform.yaml", atomically: true, encoding: .utf8)
            try await runner.check(Command("git", ["-C", work, "add", "platform.yaml"]))
            try await runner.check(Command("git", ["-C", work, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "first"]))
            try RootedFileSystem(root: lab.root).write("/etc/nodeagent/agent.yaml", Array("""
                apiVersion: nodeagent/v1
                kind: AgentConfig
                source: {repo: "file://\(work)", ref: main, path: platform.yaml}
                intervals: {poll: 1s, drift: 5m}

                """.utf8), mode: 0o644)
            func start(crash: Bool) throws -> Int32 {
                try DetachedProcess.spawn(["/bin/sh", "-c",
                    "\(crash ? "NODEAGENT_CRASH_AT=firewall-loaded " : "")exec ip netns exec \(lab.vps) \"$0\" run --config \"$1\" --root \"$2\" --revert-after 2s 2>>\"$2/daemon.log\"",
                    Binary.path, lab.root + "/etc/nodeagent/agent.yaml", lab.root])
            }
            // Killed (SIGKILL) right after loading the new firewall, before checking it.
            let first = try start(crash: true)
            let code = await DetachedProcess.waitForExit(first, timeout: .seconds(30))
            #expect(code == 128 + SIGKILL, "exit \(String(describing: code))")
            // Restarted: it waits for the dead one's revert, then applies again and converges.
            daemon = try start(crash: false)
            var ready = false
            for _ in 0..<150 where !ready {
                ready = (try? await lab.run(lab.vps, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
                                                      "http://10.8.0.1:9430/readyz"]))?.stdout == "200"
                if !ready { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(ready, "\((try? String(contentsOfFile: lab.root + "/daemon.log", encoding: .utf8)) ?? "")")
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["22", "6443"]) == ["tcp/22": false, "tcp/6443": false],
                    "nothing listens on 22 here and 6443 stays closed: the firewall is in place")
            if let pid = daemon {
                kill(pid, SIGTERM)
                #expect(await DetachedProcess.waitForExit(pid, timeout: .seconds(10)) == 0)
                daemon = nil
            }
        } catch {
            if let daemon { DetachedProcess.stop(daemon) }
            await lab.destroy()
            throw error
        }
        if let daemon { DetachedProcess.stop(daemon) }
        await lab.destroy()
    }

    @Test func sigtermDuringThePassFinishesTheStepAndExitsCleanly() async throws {
        let lab = try await NetworkLab()
        defer { Task { await lab.destroy() } }
        let state = lab.root + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: stopping}
            spec:
              firewall: {publicInterface: eth0}
              status: {listen: "127.0.0.1:9430"}

            """.write(toFile: state, atomically: true, encoding: .utf8)
        // The firewall step stops itself right after loading the new table: SIGTERM lands there.
        let pid = try DetachedProcess.spawn(["/bin/sh", "-c",
            "NODEAGENT_PAUSE_AT=firewall-loaded exec ip netns exec \(lab.vps) \"$0\" run --state \"$1\" --root \"$2\" 2>\"$2/daemon.log\"",
            Binary.path, state, lab.root])
        var stopped = false
        for _ in 0..<600 where !stopped {
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            stopped = stat.split(separator: ")").last?.split(separator: " ").first == "T"
            if !stopped { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(stopped, "the daemon never reached the pause point: \((try? String(contentsOfFile: lab.root + "/daemon.log", encoding: .utf8)) ?? "")")
        kill(pid, SIGTERM)
        kill(pid, SIGCONT)
        let code = await DetachedProcess.waitForExit(pid, timeout: .seconds(15))
        #expect(code == 0, "exit \(String(describing: code)): \((try? String(contentsOfFile: lab.root + "/daemon.log", encoding: .utf8)) ?? "")")
        // The step it was in was finished, not abandoned half-way: checked, recorded, timer disarmed.
        let fs = RootedFileSystem(root: lab.root)
        #expect(try fs.read("/var/lib/nodeagent/firewall/applied.nft") != nil)
        #expect(try fs.read("/var/lib/nodeagent/firewall/revert.pid") == nil)
        #expect(try await lab.run(lab.vps, ["nft", "list", "table", "inet", "nodeagent"]).exitCode == 0)
        await lab.destroy()
    }
}
