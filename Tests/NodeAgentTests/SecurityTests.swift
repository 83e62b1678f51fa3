import Foundation
import Glibc
import KubeClient
import Logging
@testable import NodeAgent
@testable import Reconcilers
import Synchronization
import Testing
import TestSupport
import YAML

/// The security review's findings (docs/security.md), each held by a test.
@Suite struct SecurityTests {
    // MARK: 1. authorized_keys: no write lands outside the user's own ~/.ssh

    /// Swaps `home/.ssh` between the user's real directory and a link to root's `.ssh` as
    /// fast as it can, until told to stop.
    final class Swapper: @unchecked Sendable {
        let stop = Atomic<Bool>(false)
        let done = Atomic<Bool>(false)
        let home: String

        init(home: String) {
            self.home = home
            Thread.detachNewThread { [self] in
                while !stop.load(ordering: .relaxed) {
                    rename(home + "/real", home + "/.ssh")
                    rename(home + "/.ssh", home + "/real")
                    rename(home + "/link", home + "/.ssh")
                    rename(home + "/.ssh", home + "/link")
                }
                done.store(true, ordering: .relaxed)
            }
        }

        func finish() {
            stop.store(true, ordering: .relaxed)
            while !done.load(ordering: .relaxed) { usleep(1000) }
        }
    }

    static func raceRoot() throws -> (root: String, fs: RootedFileSystem, original: [UInt8]) {
        let root = Fixtures.temporaryDirectory()
        let fs = RootedFileSystem(root: root)
        let original = Array("ssh-ed25519 AAAA root-only\n".utf8)
        try fs.makeDirectory("/root/.ssh", mode: 0o700)
        try fs.write("/root/.ssh/authorized_keys", original, mode: 0o600)
        try fs.makeDirectory("/home/eve/real", mode: 0o700)
        try FileManager.default.createSymbolicLink(atPath: root + "/home/eve/link", withDestinationPath: root + "/root/.ssh")
        return (root, fs, original)
    }

    @Test func aSwappedSSHDirectoryNeverRedirectsTheWrite() throws {
        let (root, fs, original) = try Self.raceRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let swapper = Swapper(home: root + "/home/eve")
        var written = 0, refused = 0
        for i in 0..<2000 {
            do {
                try fs.writeInUserDirectory(home: "/home/eve", subdirectory: ".ssh", name: "authorized_keys", Array("key \(i)\n".utf8),
                                            mode: 0o600, directoryMode: 0o700, uid: 1000, gid: 1000)
                written += 1
            } catch {
                refused += 1
            }
        }
        swapper.finish()
        print("swap race: \(written) writes landed in eve's directory, \(refused) refused")
        #expect(try fs.read("/root/.ssh/authorized_keys") == original, "root's authorized_keys untouched")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/root/.ssh") == ["authorized_keys"], "no temp file in root's .ssh")
        var st = stat()
        #expect(stat(root + "/root/.ssh", &st) == 0 && st.st_uid == 0 && st.st_mode & 0o777 == 0o700, "root's .ssh keeps owner and mode")
        #expect(written > 0, "the race let some writes through to eve's own directory")
    }

    /// The path-by-path sequence nodeagent used before (check for a link, then write by path),
    /// with the swap placed between the two steps: the write lands in root's directory. The
    /// race above is exactly this, at random moments, so it could fail.
    @Test func thePathBasedSequenceLosesTheRace() throws {
        let (root, fs, original) = try Self.raceRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let home = root + "/home/eve"
        rename(home + "/real", home + "/.ssh")
        #expect(try fs.isSymbolicLink("/home/eve/.ssh") == false)
        rename(home + "/.ssh", home + "/real")
        rename(home + "/link", home + "/.ssh")
        try fs.write("/home/eve/.ssh/authorized_keys", Array("key\n".utf8), mode: 0o600)
        #expect(try fs.read("/root/.ssh/authorized_keys") != original, "check-then-write by path was redirected into root's .ssh")
        // The descriptor-based write, at the same moment, refuses.
        try fs.write("/root/.ssh/authorized_keys", original, mode: 0o600)
        #expect(throws: FileSystemError.self) {
            try fs.writeInUserDirectory(home: "/home/eve", subdirectory: ".ssh", name: "authorized_keys", Array("key\n".utf8),
                                        mode: 0o600, directoryMode: 0o700, uid: 1000, gid: 1000)
        }
        #expect(try fs.read("/root/.ssh/authorized_keys") == original)
    }

    @Test func hostileFilesInTheHomeAreRefusedWithoutBlocking() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.makeDirectory("/home/eve/.ssh", mode: 0o700)
        let keys = root + "/home/eve/.ssh/authorized_keys"
        func read() throws(FileSystemError) -> [UInt8]? {
            try fs.readInUserDirectory(home: "/home/eve", subdirectory: ".ssh", name: "authorized_keys", limit: 1 << 20)
        }
        // A FIFO would block a plain open for ever: refused at once.
        #expect(mkfifo(keys, 0o600) == 0)
        #expect(throws: FileSystemError.self) { try read() }
        do { _ = try read() } catch { #expect(error.problem == .notRegularFile); #expect(error.description.contains(keys)) }
        unlink(keys)
        // A link to /dev/zero would read without end.
        try FileManager.default.createSymbolicLink(atPath: keys, withDestinationPath: "/dev/zero")
        do { _ = try read(); Issue.record("read through a link") } catch { #expect(error.problem == .symbolicLink) }
        unlink(keys)
        // Bigger than the cap.
        try fs.write("/home/eve/.ssh/authorized_keys", [UInt8](repeating: 65, count: (1 << 20) + 1), mode: 0o600)
        do { _ = try read(); Issue.record("read past the cap") } catch { #expect(error.problem == .tooLarge(limit: 1 << 20)) }
        // ~/.ssh itself a link.
        try FileManager.default.removeItem(atPath: root + "/home/eve/.ssh")
        try FileManager.default.createSymbolicLink(atPath: root + "/home/eve/.ssh", withDestinationPath: "/root")
        do { _ = try read(); Issue.record("followed ~/.ssh") } catch { #expect(error.problem == .symbolicLink) }
    }

    @Test func aFIFOAsAuthorizedKeysFailsThePassInsteadOfHangingIt() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/passwd", Array("root:x:0:0:root:/root:/bin/bash\neve:x:1000:1000::/home/eve:/bin/bash\n".utf8), mode: 0o644)
        try fs.makeDirectory("/home/eve/.ssh", mode: 0o700)
        #expect(mkfifo(root + "/home/eve/.ssh/authorized_keys", 0o600) == 0)
        let state = root + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: ssh}
            spec:
              os:
                ssh:
                  user: eve
                  authorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJyusluo6f+skZyxlCrGC9pbW+J0mbl297SaO3yWJ6Fk eve@laptop"]

            """.write(toFile: state, atomically: true, encoding: .utf8)
        let r = try await Binary.run(["plan", "--state", state, "--root", root, "--only", "os"])
        #expect(r.exitCode == 1, "\(r.stdout)\(r.stderr)")
        #expect((r.stdout + r.stderr).contains("not a regular file"), "\(r.stdout)\(r.stderr)")
    }

    // MARK: 8. secret files

    @Test func secretFilesMustBeRegularPrivateAndRootOwned() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.write("/s/good", Array("pw\n".utf8), mode: 0o600)
        #expect(try fs.readSecret("/s/good", limit: 100) == Array("pw\n".utf8))
        #expect(try fs.readSecret("/s/missing", limit: 100) == nil)
        func problem(_ path: String) -> FileSystemError.Problem? {
            do { _ = try fs.readSecret(path, limit: 100); return nil } catch { return error.problem }
        }
        try fs.write("/s/open", Array("pw".utf8), mode: 0o640)
        #expect(problem("/s/open") == .exposed(mode: 0o640))
        try FileManager.default.createSymbolicLink(atPath: root + "/s/link", withDestinationPath: root + "/s/good")
        #expect(problem("/s/link") == .symbolicLink)
        #expect(mkfifo(root + "/s/fifo", 0o600) == 0)
        #expect(problem("/s/fifo") == .notRegularFile)
        try fs.write("/s/big", [UInt8](repeating: 1, count: 101), mode: 0o600)
        #expect(problem("/s/big") == .tooLarge(limit: 100))
        try fs.write("/s/eve", Array("pw".utf8), mode: 0o600)
        try fs.setOwner("/s/eve", uid: 1000, gid: 1000)
        #expect(problem("/s/eve") == .foreignOwner(uid: 1000))
    }

    @Test func otherSystemsCredentialsAreRefusedAsSecretFiles() throws {
        for path in ["/etc/shadow", "/etc/rancher/k3s/k3s.yaml", "/var/lib/rancher/k3s/server/token", "/etc/ssh/ssh_host_ed25519_key",
                     "/root/.ssh/id_ed25519"] {
            let yaml = """
                apiVersion: nodeagent/v1
                kind: Platform
                metadata: {name: n}
                spec:
                  status: {listen: "127.0.0.1:9430", tokenFile: \(path)}

                """
            do {
                _ = try DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml")
                Issue.record("\(path) accepted")
            } catch {
                let d = try #require(error.diagnostics.first)
                #expect(d.path.description == "spec.status.tokenFile" && d.message.contains("another system's credentials"), "\(d)")
                #expect(d.mark.line == 5, "\(d)")
            }
        }
    }

    // MARK: 7. values written into other programs' input

    @Test func pathsAndValuesCannotCarryShellOrNewLines() throws {
        for (fragment, expected) in [("privateKeyFile: \"/etc/wg/key; touch /tmp/x\"", "paths are limited"),
                                     ("privateKeyFile: \"/etc/wg/key\\nPostUp = id\"", "paths are limited")] {
            let yaml = """
                apiVersion: nodeagent/v1
                kind: Platform
                metadata: {name: n}
                spec:
                  wireguard:
                    address: 10.8.0.1/24
                    \(fragment)

                """
            #expect(throws: DiagnosticsError.self) { try DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml") }
            do { _ = try DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml") } catch {
                #expect(error.diagnostics.contains { $0.message.contains(expected) }, "\(error.diagnostics)")
            }
        }
        let sysctl = """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: n}
            spec:
              os:
                sysctl:
                  vm.swappiness: "10\\nkernel.modules_disabled = 1"

            """
        do {
            _ = try DesiredStateLoader.load(Array(sysctl.utf8), file: "p.yaml")
            Issue.record("a newline in a sysctl value was accepted")
        } catch {
            let d = try #require(error.diagnostics.first)
            #expect(d.message.contains("control character (U+000A)") && d.path.description == "spec.os.sysctl.vm.swappiness", "\(d)")
            #expect(d.mark.line == 7)
        }
    }

    // MARK: 9. peers, wildcards

    @Test func peersCannotClaimClusterNetworksAndWildcardsAreRefused() throws {
        func diagnostics(_ spec: String) -> [Diagnostic] {
            let yaml = "apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: n}\nspec:\n" + spec
            do { _ = try DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml"); return [] } catch { return error.diagnostics }
        }
        let peer = diagnostics("""
              wireguard:
                address: 10.8.0.1/24
                peers:
                  - {name: evil, publicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", allowedIPs: [10.8.0.2/32, 10.42.0.0/24]}

            """)
        #expect(peer.contains { $0.path.description == "spec.wireguard.peers[0].allowedIPs[1]" && $0.message.contains("cluster network 10.42.0.0/16") },
                "\(peer)")
        for listen in ["0.0.0.0:9430", "[::]:9430", "[::ffff:0.0.0.0]:9430"] {
            let d = diagnostics("  status: {listen: \"\(listen)\"}\n")
            #expect(d.contains { $0.message.contains("listens on every address") }, "\(listen): \(d)")
        }
    }

    // MARK: 4. chart repositories

    @Test func plainHTTPChartRepositoriesAreRefusedUnlessOnTheNode() throws {
        func load(_ repo: String) -> [Diagnostic] {
            let yaml = """
                apiVersion: nodeagent/v1
                kind: Platform
                metadata: {name: n}
                spec:
                  helmReleases:
                    - {name: x, chart: x, repo: "\(repo)", version: 1.0.0, namespace: x}

                """
            do { _ = try DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml"); return [] } catch { return error.diagnostics }
        }
        #expect(load("http://charts.example.com").contains { $0.message.contains("plain http://") && $0.path.description == "spec.helmReleases[0].repo" })
        #expect(load("https://charts.example.com").isEmpty)
        #expect(load("http://127.0.0.1:8080/charts").isEmpty)
        #expect(load("http://[::1]:8080/charts").isEmpty)
        #expect(load("http://localhost/charts").isEmpty)
    }

    // MARK: 3. Git credentials

    @Test func aTokenInTheRepositoryURLIsRefusedAndNeverShown() throws {
        for repo in ["https://oauth2:glpat-SECRET123@git.example.com/ops/platform.git", "https://ghp_SECRET123@github.com/ops/platform.git"] {
            let yaml = "apiVersion: nodeagent/v1\nkind: AgentConfig\nsource: {repo: \"\(repo)\"}\n"
            do {
                _ = try AgentConfig.parse(Array(yaml.utf8), file: "agent.yaml")
                Issue.record("accepted \(repo)")
            } catch {
                let d = try #require(error.diagnostics.first)
                #expect(d.message.contains("tokenFile") && d.path.description == "source.repo", "\(d)")
                #expect(!d.description.contains("SECRET123"))
            }
        }
        // An SSH user name is not a credential.
        _ = try AgentConfig.parse(Array("apiVersion: nodeagent/v1\nkind: AgentConfig\nsource: {repo: \"ssh://git@git.example.com/p.git\"}\n".utf8),
                                  file: "agent.yaml")
        // Any command error, whatever it quotes, loses the user information of URLs.
        let error = CommandError(code: .failed, command: Command("git", ["fetch", "https://u:SECRET123@h/x"]).description,
                                 message: "fatal: unable to access 'https://u:SECRET123@h/x/': 403")
        #expect(!error.description.contains("SECRET123"), "\(error.description)")
    }

    /// Records every command it runs, then runs it for real.
    final class RecordingRunner: CommandRunner {
        let inner = SystemCommandRunner()
        let seen = Mutex<[Command]>([])
        func run(_ command: Command) async throws(CommandError) -> CommandResult {
            seen.withLock { $0.append(command) }
            return try await inner.run(command)
        }
    }

    @Test func anHTTPSTokenReachesGitOnlyThroughItsEnvironment() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let git = SystemCommandRunner()
        // A repository served over git's "dumb" HTTP by a server that wants the token.
        let work = dir + "/work", served = dir + "/srv/platform.git"
        for args in [["init", "-q", "-b", "main", work], ["-C", work, "config", "user.email", "t@example.com"], ["-C", work, "config", "user.name", "t"]] {
            _ = try await git.check(Command("git", args))
        }
        try Data(contentsOf: URL(fileURLWithPath: Fixtures.example)).write(to: URL(fileURLWithPath: work + "/platform.yaml"))
        _ = try await git.check(Command("git", ["-C", work, "add", "platform.yaml"]))
        _ = try await git.check(Command("git", ["-C", work, "commit", "-q", "-m", "first"]))
        _ = try await git.check(Command("git", ["clone", "-q", "--bare", work, served]))
        _ = try await git.check(Command("git", ["-C", served, "update-server-info"]))
        let token = "tok-\(UInt64.random(in: 0...UInt64.max))"
        try Array("\(token)\n".utf8).withUnsafeBufferPointer { _ = FileManager.default.createFile(atPath: dir + "/token", contents: Data($0)) }
        chmod(dir + "/token", 0o600)
        let port = TLSTestPeer.freePort()
        let expected = "Basic " + Data("oauth2:\(token)".utf8).base64EncodedString()
        let server = try DetachedProcess.spawn(["/usr/bin/python3", "-c", """
            import http.server, sys
            class H(http.server.SimpleHTTPRequestHandler):
                def __init__(s, *a, **k): super().__init__(*a, directory=sys.argv[1], **k)
                def do_GET(s):
                    if s.headers.get("Authorization") != sys.argv[2]:
                        s.send_response(401); s.send_header("WWW-Authenticate", 'Basic realm="x"'); s.end_headers(); return
                    super().do_GET()
            http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), H).serve_forever()
            """, dir + "/srv", expected, String(port)], output: dir + "/server.log")
        defer { DetachedProcess.stop(server) }
        for _ in 0..<400 { if TLSTestPeer.canConnect(port) { break }; try await Task.sleep(for: .milliseconds(50)) }
        let runner = RecordingRunner()
        func source(_ tokenFile: String?) -> GitSource {
            var config = AgentConfig.Source(repo: "http://127.0.0.1:\(port)/platform.git", ref: "main", commit: nil, path: "platform.yaml",
                                            deployKeyFile: nil, allowedSignersFile: nil, allowHistoryRewrite: false)
            config.tokenFile = tokenFile.map { try! AbsolutePath(parsing: $0) }
            return GitSource(config: config, mirror: dir + "/mirror-\(tokenFile == nil ? "none" : "token")", commands: runner)
        }
        // Without the token the server refuses; with it, the fetch works.
        await #expect(throws: SourceError.self) { _ = try await source(nil).fetch() }
        let revision = try await source(dir + "/token").fetch()
        #expect(revision.platform.name.value == "vps-1")
        let commands = runner.seen.withLock { $0 }
        #expect(commands.allSatisfy { !$0.arguments.joined(separator: " ").contains(token) }, "the token never in argv")
        #expect(commands.contains { ($0.environment["GIT_CONFIG_VALUE_0"] ?? nil) == "Authorization: \(expected)" })
        // A token file others can read is refused, with the reason.
        chmod(dir + "/token", 0o644)
        do { _ = try await source(dir + "/token").fetch(); Issue.record("used a world-readable token") } catch {
            #expect(error.message.contains("chmod 600"), "\(error)")
        }
    }

    @Test func initQuotesWhatItWritesAndRefusesWhatItCannot() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = ["init", "--name", "vps-7", "--endpoint", "vps-7.example.com", "--output", dir]
        let token = try await Binary.run(base + ["--repo", "https://oauth2:SECRET123@git.example.com/p.git"])
        #expect(token.exitCode != 0 && token.stderr.contains("tokenFile") && !token.stderr.contains("SECRET123"), "\(token.stderr)")
        let sha = try await Binary.run(base + ["--repo", "https://git.example.com/p.git", "--binary-sha256", "abc"])
        #expect(sha.exitCode != 0 && sha.stderr.contains("64 lowercase hexadecimal"), "\(sha.stderr)")
        let url = "https://bucket.example.com/nodeagent?X-Amz-Signature=ab&X-Amz-Date=1'x"
        let ok = try await Binary.run(base + ["--repo", "https://git.example.com/p.git", "--binary-url", url,
                                              "--binary-sha256", String(repeating: "a", count: 64)])
        #expect(ok.exitCode == 0, "\(ok.stderr)")
        // The download line, read back by a YAML parser and run by sh, keeps the URL whole.
        let root = try YAMLParser().parseDocument(try FileReading.read(dir + "/user-data.yaml"), file: "user-data.yaml")
        let line = try #require(root["runcmd"]?.sequence?.compactMap { $0.sequence?.last?.scalar?.text }.first { $0.contains("curl") })
        let echo = try await SystemCommandRunner().run(Command("sh", ["-c", "set -- " + String(try #require(line.split(separator: " ").first { $0.hasPrefix("'https") })) + "; printf %s \"$1\""]))
        #expect(echo.stdout == url, "\(line)")
        var st = stat()
        #expect(stat(dir + "/agent.yaml", &st) == 0 && st.st_mode & 0o077 == 0, "agent.yaml is 0600")
        let userData = try String(contentsOfFile: dir + "/user-data.yaml", encoding: .utf8)
        #expect(userData.contains("path: /etc/nodeagent/agent.yaml\n    permissions: \"0600\""))
    }

    // MARK: 6. what /status shows

    @Test func statusRedactsSecretsAndTheTerminalSeesNoEscapes() {
        let log = "; last log lines of helm-install-db: Error: INSTALLATION FAILED: password: hunter2-long | auth.postgresPassword=s3cr3t-value | "
            + "Authorization: Bearer abc.def | fetch https://u:tok@git.example.com/x"
        let out = StatusRedaction.redact(log, secrets: ["s3cr3t-value"])
        for secret in ["hunter2-long", "s3cr3t-value", "abc.def", "u:tok"] { #expect(!out.contains(secret), "\(out)") }
        #expect(out.contains("INSTALLATION FAILED"))
        #expect(TerminalText.sanitised("ok\u{1B}]0;pwned\u{07}\u{1B}[2J") == "ok?]0;pwned??[2J")
    }

    @Test func theStatusPortIsClosedToPodsAndOtherInterfaces() async throws {
        var spec = FirewallSpecFixture.make()
        spec.public.tcp.append(Port(9430)!)   // even listed public by mistake (validate refuses it)
        spec.vpnOnly.tcp = [Port(6443)!]      // and not listed for the VPN
        let ruleset = NftRuleset(spec, vpnInterface: "wg0", clusterNetworks: [try! IPNetwork(parsing: "10.42.0.0/16")], statusPort: Port(9430)!)
        let lines = ruleset.table.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let drop = try #require(lines.firstIndex(of: "iifname != { \"lo\", \"wg0\" } tcp dport 9430 drop"), "\(ruleset.table)")
        let firstPortAccept = try #require(lines.firstIndex { $0.contains("dport") && $0.hasSuffix("accept") && lines.firstIndex(of: "chain input {")! < lines.firstIndex(of: $0)! })
        let pods = try #require(lines.firstIndex { $0.hasPrefix("iifname { \"cni0\"") })
        #expect(drop < firstPortAccept && drop < pods, "\(ruleset.table)")
        let ns = "nasec\(UInt32.random(in: 0...UInt32.max) % 100000)"
        let runner = SystemCommandRunner()
        try await runner.check(Command("ip", ["netns", "add", ns]))
        defer { Task { _ = try? await runner.run(Command("ip", ["netns", "del", ns])) } }
        let checked = try await runner.run(Command("ip", ["netns", "exec", ns, "nft", "-c", "-f", "-"], input: Array(ruleset.transaction.utf8)))
        #expect(checked.exitCode == 0, "\(checked.stderr)")
        let listed = """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: n}
            spec:
              firewall: {publicInterface: eth0, public: {tcp: [22, 9430]}}
              status: {listen: "127.0.0.1:9430"}

            """
        #expect(throws: DiagnosticsError.self) { try DesiredStateLoader.load(Array(listed.utf8), file: "p.yaml") }
    }
}

enum FirewallSpecFixture {
    static func make() -> FirewallSpec {
        let yaml = "apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: n}\nspec:\n  firewall:\n    publicInterface: eth0\n    public: {tcp: [22]}\n"
        return try! DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml").spec.firewall!
    }
}

/// Finding 9's second NIC and finding 4's AppProject, beyond the main suite.
@Suite struct SecurityTestsMore {
    @Test func everyPublicInterfaceGetsThePreDNATFilterAndRealNftTakesIt() async throws {
        let yaml = "apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: n}\nspec:\n  firewall:\n    publicInterfaces: [eth0, eth1]\n"
        let spec = try #require(try DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml").spec.firewall)
        let ruleset = NftRuleset(spec, vpnInterface: nil, clusterNetworks: [])
        #expect(ruleset.table.contains("iifname != { \"eth0\", \"eth1\" } accept"), "\(ruleset.table)")
        let ns = "nasec\(UInt32.random(in: 0...UInt32.max) % 100000)"
        let runner = SystemCommandRunner()
        try await runner.check(Command("ip", ["netns", "add", ns]))
        defer { _ = try? FileManager.default.removeItem(atPath: "/run/netns/\(ns)") ; Task { _ = try? await runner.run(Command("ip", ["netns", "del", ns])) } }
        let checked = try await runner.run(Command("ip", ["netns", "exec", ns, "nft", "-c", "-f", "-"], input: Array(ruleset.transaction.utf8)))
        #expect(checked.exitCode == 0, "\(checked.stderr)")
        for bad in ["    publicInterface: eth0\n    publicInterfaces: [eth1]\n", "    publicInterfaces: []\n", "    publicInterfaces: [eth0, eth0]\n"] {
            let text = "apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: n}\nspec:\n  firewall:\n" + bad
            #expect(throws: DiagnosticsError.self, "\(bad)") { try DesiredStateLoader.load(Array(text.utf8), file: "p.yaml") }
        }
    }

    @Test func theAppProjectFieldsAreCheckedAndRendered() throws {
        func load(_ project: String) throws -> Platform {
            let yaml = """
                apiVersion: nodeagent/v1
                kind: Platform
                metadata: {name: n}
                spec:
                  helmReleases:
                    - {name: argocd, chart: argo-cd, repo: "https://argoproj.github.io/argo-helm", version: 7.7.11, namespace: argocd}
                  argocd:
                    appOfApps:
                      repoURL: https://git.example.com/apps.git
                      path: apps
                      targetRevision: 4f2a9c1e0b7d4f2a9c1e0b7d4f2a9c1e0b7d4f2a
                      project: \(project)

                """
            return try DesiredStateLoader.load(Array(yaml.utf8), file: "p.yaml")
        }
        do {
            _ = try load("{clusterResources: [\"cluster role\"]}")
            Issue.record("accepted a bad kind")
        } catch let error as DiagnosticsError {
            let d = try #require(error.diagnostics.first)
            #expect(d.path.description == "spec.argocd.appOfApps.project.clusterResources[0]" && d.mark.line == 12, "\(d)")
        }
        let platform = try load("{sourceRepos: [\"https://charts.example.com\"], destinationNamespaces: [apps], clusterResources: [rbac.authorization.k8s.io/ClusterRole], signatureKeys: [4AEE18F83AFDEB23], restrictDefaultProject: false}")
        let objects = try ClusterRender.argocd(platform.spec.argocd, secrets: .redacted)
        #expect(objects.map(\.subject) == ["appproject argocd/root", "application argocd/root"])
        let spec = try #require(objects[0].body["spec"])
        #expect(spec["sourceRepos"] == .array([.string("https://git.example.com/apps.git"), .string("https://charts.example.com")]))
        #expect(spec["destinations"] == .array([.object(["server": .string("https://kubernetes.default.svc"), "namespace": .string("apps")])]))
        #expect(spec["clusterResourceWhitelist"] == .array([.object(["group": .string("rbac.authorization.k8s.io"), "kind": .string("ClusterRole")])]))
        #expect(spec["signatureKeys"] == .array([.object(["keyID": .string("4AEE18F83AFDEB23")])]))
        #expect(objects[1].body["spec"]?["source"]?["targetRevision"]?.string == "4f2a9c1e0b7d4f2a9c1e0b7d4f2a9c1e0b7d4f2a")
    }
}

/// What the review of the first round found (docs/security.md).
@Suite struct SecurityReviewTests {
    @Test func quotedAndMixedCaseCredentialsAreRedactedWhole() {
        let out = StatusRedaction.redact("PASSWORD=\"two words\" Ünïcode token: 'x y z' and ok", secrets: [])
        #expect(!out.contains("two words") && !out.contains("x y z"), "\(out)")
        #expect(out.contains("Ünïcode") && out.hasSuffix("and ok"), "\(out)")
    }

    @Test func refsFollowGitsRules() throws {
        for ref in ["main\u{7F}", "a..b", "x~1", "feature:x", "-x", "a.lock", "a@{1}", "with space", "tab\tref"] {
            let yaml = "apiVersion: nodeagent/v1\nkind: AgentConfig\nsource: {repo: \"https://git.example.com/p.git\", ref: \(JSONValue.string(ref).jsonText)}\n"
            #expect(throws: DiagnosticsError.self, "\(ref)") { try AgentConfig.parse(Array(yaml.utf8), file: "agent.yaml") }
        }
        for ref in ["main", "release/1.2", "v1.0.0", "refs/heads/main"] {
            let yaml = "apiVersion: nodeagent/v1\nkind: AgentConfig\nsource: {repo: \"https://git.example.com/p.git\", ref: \(ref)}\n"
            _ = try AgentConfig.parse(Array(yaml.utf8), file: "agent.yaml")
        }
        let clear = "apiVersion: nodeagent/v1\nkind: AgentConfig\nsource: {repo: \"http://git.example.com/p.git\", tokenFile: /etc/nodeagent/secrets/git}\n"
        #expect(throws: DiagnosticsError.self) { try AgentConfig.parse(Array(clear.utf8), file: "agent.yaml") }
    }

    @Test func aCommitCannotHandTheNodesOwnGitKeyToTheCluster() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let git = SystemCommandRunner()
        let work = dir + "/work"
        for args in [["init", "-q", "-b", "main", work], ["-C", work, "config", "user.email", "t@example.com"], ["-C", work, "config", "user.name", "t"]] {
            _ = try await git.check(Command("git", args))
        }
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: n}
            spec:
              status: {listen: "127.0.0.1:9430", tokenFile: /etc/nodeagent/secrets/deploy-key}

            """.write(toFile: work + "/platform.yaml", atomically: true, encoding: .utf8)
        _ = try await git.check(Command("git", ["-C", work, "add", "platform.yaml"]))
        _ = try await git.check(Command("git", ["-C", work, "commit", "-q", "-m", "take the key"]))
        let config = AgentConfig.Source(repo: "file://\(work)", ref: "main", commit: nil, path: "platform.yaml",
                                        deployKeyFile: try AbsolutePath(parsing: "/etc/nodeagent/secrets/deploy-key"), allowedSignersFile: nil,
                                        allowHistoryRewrite: false)
        do {
            _ = try await GitSource(config: config, mirror: dir + "/mirror", commands: git).fetch()
            Issue.record("accepted the node's own deploy key as a secret file")
        } catch {
            #expect(error.reason == .invalid && error.message.contains("own Git credential"), "\(error)")
        }
    }

    @Test func aDownloadOverItsCapIsRefused() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/big", contents: Data(count: 200_000))
        let port = TLSTestPeer.freePort()
        let server = try DetachedProcess.spawn(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, String(port)],
                                               output: dir + "/server.log")
        defer { DetachedProcess.stop(server) }
        for _ in 0..<400 { if TLSTestPeer.canConnect(port) { break }; try await Task.sleep(for: .milliseconds(50)) }
        let fd = open(dir + "/out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd) }
        do {
            _ = try await HTTPDownload.fetch("http://127.0.0.1:\(port)/big", to: fd, maxSize: 100_000, onChunk: { _ in })
            Issue.record("a 200 kB download passed a 100 kB cap")
        } catch {
            #expect(error.kind == .tooLarge, "\(error)")
        }
        #expect(try await HTTPDownload.fetch("http://127.0.0.1:\(port)/big", to: fd, maxSize: 300_000, onChunk: { _ in }) == 200_000)
    }
}

@Suite struct StateDirectoryMoveTests {
    /// A node whose agent.yaml names another stateDirectory: the daemon moves what the default
    /// holds there at start, keeping what the new one already has.
    @Test func theDaemonMovesStateIntoANewStateDirectory() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let files = RootedFileSystem(root: root)
        try files.write("/var/lib/nodeagent/k3s/state.json", Array("{\"failedDigest\":\"x\"}\n".utf8), mode: 0o600)
        try files.write("/var/lib/nodeagent/firewall/pending.nft", Array("table\n".utf8), mode: 0o600)
        try files.write("/srv/state/firewall/applied.nft", Array("kept\n".utf8), mode: 0o600)
        Run.moveState(root: root, to: "/srv/state", logger: Logger(label: "test"))
        let moved = RootedFileSystem(root: root, stateDirectory: "/srv/state")
        #expect(try moved.read("/var/lib/nodeagent/k3s/state.json") == Array("{\"failedDigest\":\"x\"}\n".utf8))
        #expect(try moved.read("/var/lib/nodeagent/firewall/applied.nft") == Array("kept\n".utf8), "what the new directory has stays")
        #expect(try files.read("/var/lib/nodeagent/firewall/pending.nft") != nil, "a directory the new one has is not merged: left for the operator")
        #expect(!FileManager.default.fileExists(atPath: root + "/var/lib/nodeagent/k3s"))
    }
}
