import Foundation
import Testing
import TestSupport
import Reconcilers
import YAML

/// Property: for random valid desired states (sysctl values, public and VPN-only ports, peers),
/// changing one section plans changes for that section only; one apply converges (the next plan
/// is empty); and the kernel holds exactly what the state says. Seeded; the seed is printed.
extension HostReconcilerTests {
    struct RandomHost {
        var seed: UInt64

        mutating func next(_ bound: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(bound))
        }

        mutating func subset<T>(_ items: [T]) -> [T] { items.filter { _ in next(2) == 1 } }

        mutating func key() -> String {
            Data((0..<32).map { _ in UInt8(next(256)) }).base64EncodedString()
        }
    }

    struct HostSections: Equatable {
        var forward = "0"
        var rpFilter = "0"
        var publicTCP: [Int] = [22]
        var publicUDP: [Int] = [51820]
        var vpnTCP: [Int] = []
        var peers: [(key: String, ip: Int, keepalive: Int?)] = []

        static func == (a: HostSections, b: HostSections) -> Bool {
            a.forward == b.forward && a.rpFilter == b.rpFilter && a.publicTCP == b.publicTCP && a.publicUDP == b.publicUDP && a.vpnTCP == b.vpnTCP
                && a.peers.map(\.key) == b.peers.map(\.key) && a.peers.map(\.ip) == b.peers.map(\.ip) && a.peers.map(\.keepalive) == b.peers.map(\.keepalive)
        }

        mutating func mutate(_ section: String, _ r: inout RandomHost) {
            switch section {
            case "os":
                forward = ["0", "1"][r.next(2)]
                rpFilter = ["0", "1", "2"][r.next(3)]
            case "firewall":
                publicTCP = [22] + r.subset([80, 443, 2222, 3000, 8080, 8443, 25565])
                publicUDP = [51820] + r.subset([53, 443, 1194])
                vpnTCP = r.subset([5432, 6443, 9090, 9430, 10250])
            default:
                // Keep some peers, drop some, add some; the keepalive of a kept one may change.
                var kept = peers.filter { _ in r.next(3) > 0 }
                for i in kept.indices where r.next(4) == 0 { kept[i].keepalive = [nil, 15, 25][r.next(3)] }
                let used = Set(kept.map(\.ip))
                let free = (2..<250).filter { !used.contains($0) }
                for n in 0..<r.next(5) { kept.append((r.key(), free[n * 7 % free.count], [nil, 25][r.next(2)])) }
                peers = kept
            }
        }

        func yaml(_ lab: NetworkLab) -> String {
            let peerLines = peers.enumerated().map { i, p in
                "      - {name: p\(i), publicKey: \"\(p.key)\", allowedIPs: [10.8.0.\(p.ip)/32]\(p.keepalive.map { ", persistentKeepalive: \($0)" } ?? "")}"
            }
            return """
                apiVersion: nodeagent/v1
                kind: Platform
                metadata: {name: lab}
                spec:
                  os:
                    sysctl: {net.ipv4.ip_forward: "\(forward)", net.ipv4.conf.all.rp_filter: "\(rpFilter)"}
                  firewall:
                    publicInterface: eth0
                    public: {tcp: \(publicTCP), udp: \(publicUDP)}
                    vpnOnly: {tcp: \(vpnTCP)}
                  wireguard:
                    interface: na\(lab.id)g
                    address: 10.8.0.1/24
                    listenPort: 51820
                    implementation: userspace
                    privateKeyFile: /etc/nodeagent/secrets/wg.key
                    peers:\(peers.isEmpty ? " []" : "")
                \(peerLines.joined(separator: "\n"))

                """
        }
    }

    /// The reconcilers that `plan -o json` says have changes.
    func sectionsWithChanges(_ lab: NetworkLab, _ state: String) async throws -> Set<String> {
        let r = try await nodeagent(lab, ["plan", "--state", state, "--only", "os,firewall,wireguard", "-o", "json"])
        let report = try #require(JSONValue.parse(Array(r.stdout.utf8)), "\(r.stdout)\(r.stderr)")
        return Set((report["reconcilers"]?.array ?? []).filter { !($0["changes"]?.array ?? []).isEmpty }.compactMap { $0["name"]?.string })
    }

    @Test func randomHostStatesChangeOnlyTheirSectionAndConvergeInOnePass() async throws {
        try await withLab { lab in
            lab.track(wireguard: "na\(lab.id)g")
            let seed = UInt64(Date().timeIntervalSince1970 * 1000) & 0xFFFF_FFFF
            print("host property test: seed \(seed)")
            var random = RandomHost(seed: seed)
            var sections = HostSections()
            let state = lab.root + "/platform.yaml"
            try sections.yaml(lab).write(toFile: state, atomically: true, encoding: .utf8)
            let first = try await nodeagent(lab, ["apply", "--state", state, "--only", "os,firewall,wireguard"])
            try #require(first.exitCode == 0, "\(first.stdout)\(first.stderr)")
            var steps = 0
            for step in 0..<15 {
                let section = ["os", "firewall", "wireguard"][random.next(3)]
                let before = sections
                while sections == before { sections.mutate(section, &random) }
                let text = sections.yaml(lab)
                try text.write(toFile: state, atomically: true, encoding: .utf8)
                let planned = try await sectionsWithChanges(lab, state)
                #expect(planned == [section], "step \(step) (seed \(seed)) changed \(section) only, but the plan touches \(planned):\n\(text)")
                let applied = try await nodeagent(lab, ["apply", "--state", state, "--only", "os,firewall,wireguard"])
                #expect(applied.exitCode == 0, "step \(step) (seed \(seed)): \(applied.stdout)\(applied.stderr)\n\(text)")
                let again = try await nodeagent(lab, ["plan", "--state", state, "--only", "os,firewall,wireguard"])
                #expect(again.exitCode == 0, "step \(step) (seed \(seed)): not converged after one pass: \(again.stdout)\n\(text)")

                // What the kernel holds, read with the real tools.
                let table = try await lab.inside(lab.vps, ["nft", "list", "table", "inet", "nodeagent"]).stdout
                for port in sections.publicTCP + sections.vpnTCP {
                    #expect(table.contains("\(port)"), "step \(step) (seed \(seed)): port \(port) is not in the table")
                }
                let peers = try await lab.inside(lab.vps, ["wg", "show", "na\(lab.id)g", "allowed-ips"]).stdout
                let live = Set(peers.split(separator: "\n").map { $0.replacingOccurrences(of: "\t", with: " ") })
                #expect(live == Set(sections.peers.map { "\($0.key) 10.8.0.\($0.ip)/32" }), "step \(step) (seed \(seed)): peers differ")
                let forward = try await lab.inside(lab.vps, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout
                #expect(forward.trimmingCharacters(in: .whitespacesAndNewlines) == sections.forward)
                steps += 1
            }
            print("host property test: \(steps) random changes, each planned for its own section only and converged in one pass")
        }
    }
}
