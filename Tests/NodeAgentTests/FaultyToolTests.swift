import Foundation
import Glibc
import Testing
import TestSupport
import Reconcilers

/// Fault injection: `nft` and `wg` that fail, hang, print garbage or crash, put first in PATH
/// of a real `nodeagent apply` in the lab. Each time the run must end with exit 1 and a reason
/// naming the tool, within the (test-capped) command timeout, with every hanging process
/// reaped, and the host exactly as the last good pass left it. Then the real tools converge.
extension HostReconcilerTests {
    struct ToolFault: Sendable, CustomStringConvertible {
        var tool: String
        var real: String
        /// Which invocation misbehaves: a word of its arguments.
        var match: String
        var mode: StandInTool.Mode
        var reconciler: String
        /// What stderr must say.
        var says: String
        var description: String { "\(tool) \(match): \(mode)" }
    }

    static let toolFaults: [ToolFault] = [
        ToolFault(tool: "nft", real: "/usr/sbin/nft", match: "-f", mode: .fail, reconciler: "firewall", says: "stand-in nft refuses"),
        ToolFault(tool: "nft", real: "/usr/sbin/nft", match: "-f", mode: .hang, reconciler: "firewall", says: "timed out"),
        ToolFault(tool: "nft", real: "/usr/sbin/nft", match: "-f", mode: .crash, reconciler: "firewall", says: "nft"),
        ToolFault(tool: "nft", real: "/usr/sbin/nft", match: "list", mode: .garbage, reconciler: "firewall", says: "nft"),
        ToolFault(tool: "nft", real: "/usr/sbin/nft", match: "list", mode: .hang, reconciler: "firewall", says: "timed out"),
        ToolFault(tool: "wg", real: "/usr/bin/wg", match: "syncconf", mode: .fail, reconciler: "wireguard", says: "wg syncconf"),
        ToolFault(tool: "wg", real: "/usr/bin/wg", match: "syncconf", mode: .hang, reconciler: "wireguard", says: "timed out"),
        ToolFault(tool: "wg", real: "/usr/bin/wg", match: "dump", mode: .garbage, reconciler: "wireguard", says: "wg"),
        ToolFault(tool: "wg", real: "/usr/bin/wg", match: "dump", mode: .crash, reconciler: "wireguard", says: "wg"),
    ]

    @Test func failingHangingAndGarbageToolsLeaveTheHostAsItWas() async throws {
        try await withLab { lab in
            lab.track(wireguard: "na\(lab.id)g")
            let one = Peer(name: "one", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.2/32")
            let two = Peer(name: "two", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.3/32")
            let good = try write(lab, platform(lab, peers: [one]))
            let first = try await nodeagent(lab, ["apply", "--state", good, "--only", "firewall,wireguard"])
            try #require(first.exitCode == 0, "\(first.stdout)\(first.stderr)")
            let changed = lab.root + "/changed.yaml"
            try platform(lab, publicTCP: [22, 80, 443, 8443], peers: [one, two]).write(toFile: changed, atomically: true, encoding: .utf8)

            func host() async throws -> [String] {
                [try await lab.inside(lab.vps, ["nft", "-s", "list", "ruleset"]).stdout,
                 try await lab.inside(lab.vps, ["wg", "show", "na\(lab.id)g", "peers"]).stdout]
            }
            let before = try await host()
            let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
            for fault in Self.toolFaults {
                let standIn = try StandInTool(fault.tool, real: fault.real, match: fault.match, mode: fault.mode)
                defer { standIn.remove() }
                let started = ContinuousClock.now
                let r = try await nodeagent(lab, ["apply", "--state", changed, "--only", fault.reconciler],
                                            environment: ["PATH": standIn.directory + ":" + path, "NODEAGENT_TEST_COMMAND_TIMEOUT_MS": "1500"])
                let took = ContinuousClock.now - started
                print("fault \(fault): exit \(r.exitCode.map(String.init) ?? "signal") in \(took): \(r.stderr.split(separator: "\n").first ?? "")")
                #expect(r.exitCode == 1, "\(fault): \(r.stdout)\(r.stderr)")
                #expect(r.stderr.contains(fault.says), "\(fault): \(r.stderr)")
                #expect(took < .seconds(20), "\(fault): the timeout fired late")
                if fault.mode == .hang {
                    #expect(standIn.hangs() >= 1, "\(fault): the stand-in was not reached")
                    for _ in 0..<100 { if standIn.survivors().isEmpty { break }; try await Task.sleep(for: .milliseconds(50)) }
                    #expect(standIn.survivors().isEmpty, "\(fault): hanging processes were left running: \(standIn.survivors())")
                }
                #expect(try await host() == before, "\(fault): the host changed")
            }
            let fixed = try await nodeagent(lab, ["apply", "--state", changed, "--only", "firewall,wireguard"])
            #expect(fixed.exitCode == 0, "\(fixed.stdout)\(fixed.stderr)")
            #expect(try await nodeagent(lab, ["plan", "--state", changed, "--only", "firewall,wireguard"]).exitCode == 0)
            #expect(try await lab.inside(lab.vps, ["nft", "list", "table", "inet", "nodeagent"]).stdout.contains("8443"))
            #expect(try await lab.inside(lab.vps, ["wg", "show", "na\(lab.id)g", "peers"]).stdout.contains(two.publicKey))
        }
    }

    /// `/var/lib/nodeagent` and `/etc/sysctl.d` read-only (a bind mount remounted ro): the pass
    /// fails with the reason before touching the kernel, the firewall and the sysctl keep their
    /// values, and once the directory is writable again one pass converges.
    @Test func aReadOnlyStateDirectoryChangesNothing() async throws {
        try await withLab { lab in
            lab.track(wireguard: "na\(lab.id)g")
            let one = Peer(name: "one", publicKey: try await newKey(lab).publicKey, allowedIP: "10.8.0.2/32")
            let good = try write(lab, platform(lab, peers: [one]))
            try #require(try await nodeagent(lab, ["apply", "--state", good, "--only", "os,firewall,wireguard"]).exitCode == 0)
            let changed = lab.root + "/changed.yaml"
            try platform(lab, publicTCP: [22, 80, 443, 8443], peers: [one]).replacingOccurrences(of: "ip_forward: \"1\"", with: "ip_forward: \"0\"")
                .write(toFile: changed, atomically: true, encoding: .utf8)
            let runner = SystemCommandRunner()
            let dirs = [lab.root + "/var/lib/nodeagent", lab.root + "/etc/sysctl.d"]
            for dir in dirs {
                try await runner.check(Command("mount", ["--bind", dir, dir]))
                try await runner.check(Command("mount", ["-o", "remount,ro,bind", dir]))
            }
            defer { for dir in dirs { umount2(dir, Int32(MNT_DETACH)) } }
            let table = try await lab.inside(lab.vps, ["nft", "-s", "list", "table", "inet", "nodeagent"]).stdout
            for only in ["firewall", "os"] {
                let r = try await nodeagent(lab, ["apply", "--state", changed, "--only", only])
                #expect(r.exitCode == 1, "\(only): \(r.stdout)\(r.stderr)")
                #expect(r.stderr.contains("Read-only file system"), "\(only): \(r.stderr)")
            }
            #expect(try await lab.inside(lab.vps, ["nft", "-s", "list", "table", "inet", "nodeagent"]).stdout == table, "the firewall changed")
            #expect(try await lab.inside(lab.vps, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout == "1\n", "the sysctl changed")
            for dir in dirs { umount2(dir, Int32(MNT_DETACH)) }
            let fixed = try await nodeagent(lab, ["apply", "--state", changed, "--only", "os,firewall,wireguard"])
            #expect(fixed.exitCode == 0, "\(fixed.stdout)\(fixed.stderr)")
            #expect(try await lab.inside(lab.vps, ["nft", "list", "table", "inet", "nodeagent"]).stdout.contains("8443"))
            #expect(try await lab.inside(lab.vps, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout == "0\n")
        }
    }
}
