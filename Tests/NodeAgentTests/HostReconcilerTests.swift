import Foundation
import Glibc
import Testing
import TestSupport
import Reconcilers

/// The host reconcilers against the real kernel: nftables, wireguard-go, sysctl and sshd, run by
/// the real binary inside network namespaces and temp roots that each test makes and removes.
/// Nothing here touches this machine's own firewall, interfaces or sshd.
@Suite("Host reconcilers in network namespaces (real nft, wireguard-go, sshd)", .serialized)
struct HostReconcilerTests {
    init() {}
    static let vpsPorts = ["22", "80", "443", "5432", "6443", "9430", "10250", "udp:5353"]

    /// Runs `body` with a fresh lab whose vps listens on `vpsPorts` and whose pod serves the
    /// NodePort's target; the lab is removed whatever happens.
    func withLab(_ body: (NetworkLab) async throws -> Void) async throws {
        let lab = try await NetworkLab()
        do {
            try await lab.listen(lab.vps, address: NetworkLab.vpsPublic, ports: Self.vpsPorts)
            try await lab.listen(lab.pod, address: "10.42.0.10", ports: ["8080"])
            try await body(lab)
        } catch {
            await lab.destroy()
            throw error
        }
        await lab.destroy()
    }

    struct Peer {
        var name: String
        var publicKey: String
        var allowedIP: String
    }

    func platform(_ lab: NetworkLab, publicTCP: [Int] = [22, 80, 443], peers: [Peer]) -> String {
        let peerLines = peers.map { "      - {name: \($0.name), publicKey: \"\($0.publicKey)\", allowedIPs: [\($0.allowedIP)]}" }
        return """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: lab}
            spec:
              os:
                sysctl: {net.ipv4.ip_forward: "1"}
              firewall:
                publicInterface: eth0
                public: {tcp: [\(publicTCP.map(String.init).joined(separator: ", "))], udp: [51820]}
                vpnOnly: {tcp: [6443, 9430, 5432]}
              wireguard:
                interface: na\(lab.id)g
                address: 10.8.0.1/24
                listenPort: 51820
                endpoint: \(NetworkLab.vpsPublic)
                implementation: userspace
                privateKeyFile: /etc/nodeagent/secrets/wg.key
                peers:
            \(peerLines.joined(separator: "\n"))

            """
    }

    func write(_ lab: NetworkLab, _ text: String) throws -> String {
        let path = lab.root + "/platform.yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// `nodeagent ARGS --root ROOT` inside the vps namespace.
    func nodeagent(_ lab: NetworkLab, _ arguments: [String], environment: [String: String?] = [:]) async throws -> CommandResult {
        try await lab.run(lab.vps, [Binary.path] + arguments + ["--root", lab.root], environment: environment)
    }

    func newKey(_ lab: NetworkLab) async throws -> (privateKey: String, publicKey: String) {
        let key = try await lab.inside(lab.admin, ["wg", "genkey"]).stdout
        let pub = try await lab.inside(lab.admin, ["wg", "pubkey"], input: key).stdout
        return (key.trimmingCharacters(in: .whitespacesAndNewlines), pub.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Brings up the admin side of the tunnel from `nodeagent wireguard client-config`.
    func connectAdmin(_ lab: NetworkLab, state: String, privateKey: String) async throws {
        let config = try await nodeagent(lab, ["wireguard", "client-config", "admin", "--state", state])
        #expect(config.exitCode == 0, "\(config.stderr)")
        func value(_ key: String) -> String? {
            config.stdout.split(separator: "\n").first { $0.hasPrefix("\(key) = ") }.map { String($0.dropFirst(key.count + 3)) }
        }
        let serverKey = try #require(value("PublicKey"))
        let endpoint = try #require(value("Endpoint"))
        #expect(value("Address") == "10.8.0.2/32")
        #expect(value("AllowedIPs") == "10.8.0.0/24")
        let iface = "na\(lab.id)c"
        lab.track(wireguard: iface)
        try await lab.inside(lab.admin, ["wireguard-go", iface])
        let keyFile = lab.root + "/admin.key"
        try privateKey.write(toFile: keyFile, atomically: true, encoding: .utf8)
        try await lab.inside(lab.admin, ["wg", "set", iface, "private-key", keyFile, "peer", serverKey, "endpoint", endpoint,
                                         "allowed-ips", "10.8.0.0/24", "persistent-keepalive", "1"])
        try await lab.inside(lab.admin, ["ip", "addr", "add", "10.8.0.2/24", "dev", iface])
        try await lab.inside(lab.admin, ["ip", "link", "set", iface, "up"])
    }

    func expectPorts(_ result: [String: Bool], open: [String], closed: [String], _ what: String,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        for p in open { #expect(result[p] == true, "\(what): \(p) should answer", sourceLocation: sourceLocation) }
        for p in closed { #expect(result[p] == false, "\(what): \(p) should not answer", sourceLocation: sourceLocation) }
    }

    static let probed = ["22", "80", "443", "5432", "6443", "9430", "10250", "30080", "udp:5353"]

    @Test func exactlyTheDeclaredPortsAnswerFromEachSide() async throws {
        try await withLab { lab in
            // Without nodeagent everything answers, the DNAT'ed NodePort included: the probes can fail.
            let before = try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["6443", "10250", "udp:5353"])
            expectPorts(before, open: ["tcp/6443", "tcp/10250", "udp/5353"], closed: [], "before")
            try await lab.inside(lab.vps, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            let nodePortBefore = try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["30080"])
            #expect(nodePortBefore["tcp/30080"] == true, "the simulated kube-proxy DNAT works before the firewall")
            try await lab.inside(lab.vps, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])

            let admin = try await newKey(lab)
            let state = try write(lab, platform(lab, peers: [Peer(name: "admin", publicKey: admin.publicKey, allowedIP: "10.8.0.2/32")]))
            lab.track(wireguard: "na\(lab.id)g")
            let applied = try await nodeagent(lab, ["apply", "--state", state, "--only", "os,firewall,wireguard"])
            #expect(applied.exitCode == 0, "\(applied.stdout)\n\(applied.stderr)")
            #expect(try await lab.inside(lab.vps, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout == "1\n")
            try await connectAdmin(lab, state: state, privateKey: admin.privateKey)

            let fromInternet = try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, Self.probed)
            expectPorts(fromInternet, open: ["tcp/22", "tcp/80", "tcp/443"],
                        closed: ["tcp/5432", "tcp/6443", "tcp/9430", "tcp/10250", "tcp/30080", "udp/5353"], "from the internet")
            let throughTunnel = try await lab.probe(from: lab.admin, to: "10.8.0.1", Self.probed)
            expectPorts(throughTunnel, open: ["tcp/22", "tcp/80", "tcp/443", "tcp/5432", "tcp/6443", "tcp/9430", "tcp/30080"],
                        closed: ["tcp/10250", "udp/5353"], "through WireGuard")
            // The admin machine reaching the public address without the tunnel is just the internet.
            let adminPublic = try await lab.probe(from: lab.admin, to: NetworkLab.vpsPublic, ["443", "6443", "30080"])
            expectPorts(adminPublic, open: ["tcp/443"], closed: ["tcp/6443", "tcp/30080"], "admin without the tunnel")
            let curl = try await lab.run(lab.admin, ["curl", "-s", "--max-time", "5", "http://10.8.0.1:9430/"])
            #expect(curl.stdout == "port 9430\n")

            let again = try await nodeagent(lab, ["plan", "--state", state, "--only", "os,firewall,wireguard"])
            #expect(again.exitCode == 0, "a converged node plans nothing: \(again.stdout)")
            let serverKey = try await lab.inside(lab.vps, ["wg", "show", "na\(lab.id)g", "public-key"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(again.stdout.contains("wireguard: up to date (public key \(serverKey))"))
        }
    }

    @Test func aFlushedTableIsSeenAsDriftAndRestored() async throws {
        try await withLab { lab in
            let admin = try await newKey(lab)
            let state = try write(lab, platform(lab, peers: [Peer(name: "admin", publicKey: admin.publicKey, allowedIP: "10.8.0.2/32")]))
            lab.track(wireguard: "na\(lab.id)g")
            #expect(try await nodeagent(lab, ["apply", "--state", state, "--only", "firewall"]).exitCode == 0)
            // Flushed by hand, the chains keep their drop policy: even SSH is now shut.
            try await lab.inside(lab.vps, ["nft", "flush", "table", "inet", "nodeagent"])
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["22"])["tcp/22"] == false)
            let plan = try await nodeagent(lab, ["plan", "--state", state, "--only", "firewall"])
            #expect(plan.exitCode == 2)
            #expect(plan.stdout.contains("~ nftables table inet nodeagent (drift: changed outside nodeagent)"))
            #expect(try await nodeagent(lab, ["apply", "--state", state, "--only", "firewall"]).exitCode == 0)
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["22", "6443"]) == ["tcp/22": true, "tcp/6443": false])
            #expect(try await nodeagent(lab, ["plan", "--state", state, "--only", "firewall"]).exitCode == 0)
            // Deleted by hand: the same.
            try await lab.inside(lab.vps, ["nft", "delete", "table", "inet", "nodeagent"])
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["6443"])["tcp/6443"] == true)
            let recreate = try await nodeagent(lab, ["plan", "--state", state, "--only", "firewall"])
            #expect(recreate.exitCode == 2)
            #expect(recreate.stdout.contains("+ nftables table inet nodeagent"))
            #expect(try await nodeagent(lab, ["apply", "--state", state, "--only", "firewall"]).exitCode == 0)
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["6443"])["tcp/6443"] == false)
        }
    }

    @Test func anUnconfirmedChangeIsRolledBackWithinTheBound() async throws {
        try await withLab { lab in
            try await lab.listen(lab.vps, address: NetworkLab.vpsPublic, ports: ["8443"])
            let peers = [Peer(name: "admin", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.2/32")]
            let base = try write(lab, platform(lab, peers: peers))
            #expect(try await nodeagent(lab, ["apply", "--state", base, "--only", "firewall"]).exitCode == 0)
            let risky = try write(lab, platform(lab, publicTCP: [22, 80, 443, 8443], peers: peers))
            let applied = try await nodeagent(lab, ["apply", "--state", risky, "--only", "firewall", "--confirm-within", "10m"])
            #expect(applied.exitCode == 0, "\(applied.stderr)")
            #expect(applied.stderr.contains("AwaitingConfirmation"))
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["8443"])["tcp/8443"] == true)
            // Nobody confirms: when the bound passes (the timer fired instead of waited for), the
            // previous ruleset is back.
            #expect(try await RevertTimers.fire(under: lab.root) == 1)
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["8443", "22"]) == ["tcp/8443": false, "tcp/22": true])
            let plan = try await nodeagent(lab, ["plan", "--state", risky, "--only", "firewall"])
            #expect(plan.exitCode == 1)
            #expect(plan.stdout.contains("RolledBack"))

            // Confirmed in time, it stays.
            #expect(try await nodeagent(lab, ["confirm", "--reset"]).exitCode == 0)
            #expect(try await nodeagent(lab, ["apply", "--state", risky, "--only", "firewall", "--confirm-within", "10m"]).exitCode == 0)
            // While it waits, no other change goes in over it (and the known-good rollback stays).
            let third = try write(lab, platform(lab, publicTCP: [22, 80, 443, 8443, 9000], peers: peers))
            let blocked = try await nodeagent(lab, ["apply", "--state", third, "--only", "firewall"])
            #expect(blocked.exitCode == 1)
            #expect(blocked.stderr.contains("AwaitingConfirmation"))
            _ = try write(lab, platform(lab, publicTCP: [22, 80, 443, 8443], peers: peers))
            let confirmed = try await nodeagent(lab, ["confirm"])
            #expect(confirmed.stdout.hasPrefix("confirmed"))
            #expect(RevertTimers.pids(under: lab.root).isEmpty, "confirmed: no timer is left to revert it")
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["8443"])["tcp/8443"] == true)
            #expect(try await nodeagent(lab, ["plan", "--state", risky, "--only", "firewall"]).exitCode == 0)
        }
    }

    @Test func aFirewallForAnInterfaceThatDoesNotExistIsRefused() async throws {
        try await withLab { lab in
            let peers = [Peer(name: "admin", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.2/32")]
            let state = try write(lab, platform(lab, peers: peers).replacingOccurrences(of: "publicInterface: eth0", with: "publicInterface: eth9"))
            let r = try await nodeagent(lab, ["apply", "--state", state, "--only", "firewall"])
            #expect(r.exitCode == 1)
            #expect(r.stderr.contains("NoSuchInterface"))
            #expect(try await lab.run(lab.vps, ["nft", "list", "table", "inet", "nodeagent"]).exitCode != 0, "nothing was loaded")
        }
    }

    @Test func aCrashInTheMiddleOfAChangeIsRolledBack() async throws {
        try await withLab { lab in
            try await lab.listen(lab.vps, address: NetworkLab.vpsPublic, ports: ["8443"])
            let peers = [Peer(name: "admin", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.2/32")]
            let base = try write(lab, platform(lab, peers: peers))
            #expect(try await nodeagent(lab, ["apply", "--state", base, "--only", "firewall"]).exitCode == 0)
            let next = try write(lab, platform(lab, publicTCP: [22, 80, 443, 8443], peers: peers))
            // SIGKILL right after the new table is loaded, before any check or disarm.
            let crashed = try await nodeagent(lab, ["apply", "--state", next, "--only", "firewall", "--revert-after", "10m"],
                                              environment: ["NODEAGENT_CRASH_AT": "firewall-loaded"])
            #expect(crashed.exitCode != 0)
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["8443"])["tcp/8443"] == true)
            #expect(try await RevertTimers.fire(under: lab.root) == 1, "the crashed apply left its timer armed")
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["8443", "22"]) == ["tcp/8443": false, "tcp/22": true])

            // The one place a timer's own `sleep` runs out (1 s) instead of being fired: the
            // same crash, and the previous ruleset is back once the bound has passed.
            let again = try await nodeagent(lab, ["apply", "--state", next, "--only", "firewall", "--revert-after", "1s"],
                                            environment: ["NODEAGENT_CRASH_AT": "firewall-loaded"])
            #expect(again.exitCode != 0)
            var left = RevertTimers.pids(under: lab.root)
            for _ in 0..<200 where !left.isEmpty {
                try await Task.sleep(for: .milliseconds(50))
                left = RevertTimers.pids(under: lab.root)
            }
            #expect(left.isEmpty, "the timer did not run out within 10 s of its 1 s bound")
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["8443", "22"]) == ["tcp/8443": false, "tcp/22": true])
        }
    }

    /// `kill -9` of `nodeagent apply` at random moments (seeds printed), 50 times, while the
    /// desired state flips between two versions (firewall ports, WireGuard peers, sysctl): then
    /// one clean pass converges, the next plan is empty (every managed file whole and as
    /// desired), and the firewall table is there and stays.
    @Test func killedAtRandomMomentsTheNextPassConverges() async throws {
        try await withLab { lab in
            try await lab.listen(lab.vps, address: NetworkLab.vpsPublic, ports: ["8443"])
            let a = try write(lab, platform(lab, peers: [Peer(name: "one", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.2/32")]))
            let textB = platform(lab, publicTCP: [22, 80, 443, 8443], peers: [Peer(name: "two", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.3/32")])
            let b = lab.root + "/platform-b.yaml"
            try textB.write(toFile: b, atomically: true, encoding: .utf8)
            var seed = UInt64(Date().timeIntervalSince1970 * 1000) & 0xFFFF_FFFF
            print("kill -9 fault injection: seed \(seed)")
            var killed = 0
            for run in 0..<50 {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                let delay = Int((seed >> 33) % 400)
                let state = run % 2 == 0 ? a : b
                let pid = try DetachedProcess.spawn(["/usr/sbin/ip", "netns", "exec", lab.vps, Binary.path, "apply", "--state", state,
                                                     "--only", "os,firewall,wireguard", "--revert-after", "2s", "--root", lab.root])
                try await Task.sleep(for: .milliseconds(delay))
                if kill(pid, SIGKILL) == 0 { killed += 1 }
                _ = await DetachedProcess.waitForExit(pid, timeout: .seconds(30))
            }
            print("kill -9 fault injection: \(killed) of 50 runs killed")
            // Any revert armed by a killed run fires (now, not after its bound); then one clean pass.
            print("kill -9 fault injection: \(try await RevertTimers.fire(under: lab.root)) revert timers left armed and fired")
            let final = try await nodeagent(lab, ["apply", "--state", b, "--only", "os,firewall,wireguard", "--revert-after", "2s"])
            #expect(final.exitCode == 0, "\(final.stdout)\(final.stderr)")
            #expect(RevertTimers.pids(under: lab.root).isEmpty, "no timer left that could revert the change")
            let plan = try await nodeagent(lab, ["plan", "--state", b, "--only", "os,firewall,wireguard"])
            #expect(plan.exitCode == 0, "converged and stays so: \(plan.stdout)\(plan.stderr)")
            #expect(try await lab.probe(from: lab.internet, to: NetworkLab.vpsPublic, ["8443", "22"]) == ["tcp/8443": true, "tcp/22": true])
            // The empty plan says every managed file holds exactly its desired content. A temp file
            // of an atomic write killed before its rename is never a live file: count them.
            let leftovers = (FileManager.default.enumerator(atPath: lab.root)?.allObjects as? [String] ?? []).filter { $0.contains(".nodeagent-") }
            print("kill -9 fault injection: \(leftovers.count) temp files of interrupted writes left beside the live ones")
            let table = try await lab.inside(lab.vps, ["nft", "list", "table", "inet", "nodeagent"])
            #expect(table.exitCode == 0 && table.stdout.contains("8443"))
        }
    }

    @Test func peerChurnLeavesTheUntouchedPeersSessionAlone() async throws {
        try await withLab { lab in
            let admin = try await newKey(lab)
            let old = try await newKey(lab), new = try await newKey(lab)
            let adminPeer = Peer(name: "admin", publicKey: admin.publicKey, allowedIP: "10.8.0.2/32")
            let state = try write(lab, platform(lab, peers: [adminPeer, Peer(name: "old", publicKey: old.publicKey, allowedIP: "10.8.0.3/32")]))
            lab.track(wireguard: "na\(lab.id)g")
            #expect(try await nodeagent(lab, ["apply", "--state", state, "--only", "os,firewall,wireguard"]).exitCode == 0)
            try await connectAdmin(lab, state: state, privateKey: admin.privateKey)
            #expect(try await lab.probe(from: lab.admin, to: "10.8.0.1", ["9430"])["tcp/9430"] == true)
            let handshake = try await latestHandshake(lab, of: admin.publicKey)
            #expect(handshake != nil)
            try await Task.sleep(for: .seconds(1.2))   // a new handshake would carry a later second

            let churned = try write(lab, platform(lab, peers: [adminPeer, Peer(name: "new", publicKey: new.publicKey, allowedIP: "10.8.0.4/32")]))
            let plan = try await nodeagent(lab, ["plan", "--state", churned, "--only", "wireguard"])
            #expect(plan.stdout.contains("+ wireguard peer new 10.8.0.4/32"))
            #expect(plan.stdout.contains("- wireguard peer \(old.publicKey) 10.8.0.3/32"))
            #expect(!plan.stdout.contains("peer admin"))
            #expect(try await nodeagent(lab, ["apply", "--state", churned, "--only", "wireguard"]).exitCode == 0)
            #expect(try await lab.probe(from: lab.admin, to: "10.8.0.1", ["9430"])["tcp/9430"] == true)
            #expect(try await latestHandshake(lab, of: admin.publicKey) == handshake, "the change renewed the untouched peer's handshake")
            let peers = try await lab.inside(lab.vps, ["wg", "show", "na\(lab.id)g", "peers"]).stdout
            #expect(Set(peers.split(separator: "\n").map(String.init)) == [admin.publicKey, new.publicKey])
        }
    }

    func latestHandshake(_ lab: NetworkLab, of key: String) async throws -> String? {
        let dump = try await lab.inside(lab.vps, ["wg", "show", "na\(lab.id)g", "latest-handshakes"]).stdout
        return dump.split(separator: "\n").first { $0.hasPrefix(key) }?.split(separator: "\t").last.map(String.init)
    }

    @Test func sshdRefusesABrokenConfigurationAndTheOldDropInStays() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.makeDirectory("/etc/ssh", mode: 0o755)
        try await SystemCommandRunner().check(Command("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", root + "/etc/ssh/ssh_host_ed25519_key"]))
        try fs.write("/etc/ssh/sshd_config", Array("HostKey \(root)/etc/ssh/ssh_host_ed25519_key\nInclude /etc/ssh/sshd_config.d/*.conf\n".utf8), mode: 0o644)
        let state = root + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: ssh}
            spec:
              os:
                ssh:
                  port: 2222
                  authorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJyusluo6f+skZyxlCrGC9pbW+J0mbl297SaO3yWJ6Fk jules@laptop"]

            """.write(toFile: state, atomically: true, encoding: .utf8)
        // sshd -t needs /run/sshd: give it a private /run in a mount namespace of its own.
        func apply() async throws -> CommandResult {
            try await SystemCommandRunner().run(Command("unshare", ["-m", "sh", "-c",
                "mount -t tmpfs tmpfs /run && mkdir /run/sshd && exec \"$0\" apply --state \"$1\" --root \"$2\" --only os",
                Binary.path, state, root]))
        }
        let good = try await apply()
        #expect(good.exitCode == 0, "\(good.stderr)")
        let written = try #require(try fs.read("/etc/ssh/sshd_config.d/10-nodeagent.conf"))
        #expect(String(decoding: written, as: UTF8.self).contains("Port 2222\n"))
        #expect(try fs.mode("/root/.ssh/authorized_keys") == 0o600)
        #expect(try fs.mode("/root/.ssh") == 0o700)

        try fs.write("/etc/ssh/sshd_config.d/20-by-hand.conf", Array("NoSuchOption yes\n".utf8), mode: 0o644)
        try String(contentsOfFile: state, encoding: .utf8).replacingOccurrences(of: "port: 2222", with: "port: 22")
            .write(toFile: state, atomically: true, encoding: .utf8)
        let refused = try await apply()
        #expect(refused.exitCode == 1)
        #expect(refused.stderr.contains("sshd -t refused the configuration with the new drop-in, so it was not written"))
        #expect(refused.stderr.contains("NoSuchOption"))
        #expect(try fs.read("/etc/ssh/sshd_config.d/10-nodeagent.conf") == written)

        // A main config that does not include sshd_config.d: valid, but the drop-in would not count.
        try fs.remove("/etc/ssh/sshd_config.d/20-by-hand.conf")
        try fs.write("/etc/ssh/sshd_config", Array("HostKey \(root)/etc/ssh/ssh_host_ed25519_key\nPort 22\n".utf8), mode: 0o644)
        try String(contentsOfFile: state, encoding: .utf8).replacingOccurrences(of: "port: 22\n", with: "port: 2200\n")
            .write(toFile: state, atomically: true, encoding: .utf8)
        let ineffective = try await apply()
        #expect(ineffective.exitCode == 1)
        #expect(ineffective.stderr.contains("DropInNotEffective"), "\(ineffective.stderr)")
        #expect(try fs.read("/etc/ssh/sshd_config.d/10-nodeagent.conf") == written, "the previous drop-in is put back")
    }

    @Test func authorizedKeysAreNeverWrittenThroughASymlink() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/passwd", Array("root:x:0:0:root:/root:/bin/bash\neve:x:1000:1000::/home/eve:/bin/bash\n".utf8), mode: 0o644)
        try fs.makeDirectory("/root/.ssh", mode: 0o700)
        try fs.write("/root/.ssh/authorized_keys", Array("ssh-ed25519 AAAA root-only\n".utf8), mode: 0o600)
        try fs.makeDirectory("/home/eve", mode: 0o755)
        // eve points her ~/.ssh at root's, hoping root writes her key there.
        try FileManager.default.createSymbolicLink(atPath: root + "/home/eve/.ssh", withDestinationPath: root + "/root/.ssh")
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
        let r = try await Binary.run(["apply", "--state", state, "--root", root, "--only", "os"])
        #expect(r.exitCode == 1)
        #expect(r.stderr.contains("SymlinkRefused"))
        #expect(try fs.read("/root/.ssh/authorized_keys") == Array("ssh-ed25519 AAAA root-only\n".utf8))
    }
}
