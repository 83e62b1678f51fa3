import Foundation
import Testing
import TestSupport
@testable import Reconcilers
import YAML

/// `plan()` of the host reconcilers as pure functions of desired and observed state.
@Suite("Host reconcilers: plans as pure functions")
struct HostPlanTests {
    func platform(_ spec: String) throws -> Platform {
        try DesiredStateLoader.load(Array("apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: n}\nspec:\n\(spec)".utf8), file: "p.yaml")
    }

    let host = Host(root: "/nonexistent-nodeagent-root")

    @Test func rulesetFiltersPublicTrafficBeforeDNATAndOpensVPNOnlyPortsOnTheTunnel() throws {
        let p = try platform("""
              firewall: {publicInterface: ens3, public: {tcp: [22, 443], udp: [51820]}, vpnOnly: {tcp: [6443]}}
              wireguard: {interface: wg0, address: 10.8.0.1/24}
              k3s: {version: v1.31.4+k3s1, sha256: "\(String(repeating: "0", count: 64))", clusterCIDR: "fd42::/56"}

            """)
        let table = try #require(FirewallReconciler(host: host).desired(from: p)).ruleset.table
        #expect(table.contains("type filter hook prerouting priority -150; policy accept;"))
        #expect(table.contains("\t\tiifname != \"ens3\" accept\n"))
        #expect(table.contains("\t\ttcp dport { 22, 443 } accept\n\t\tudp dport { 51820 } accept\n\t\tcounter drop\n\t}\n\tchain input"))
        #expect(table.contains("iifname \"wg0\" tcp dport { 6443 } accept"))
        #expect(table.contains("\t\ttcp dport { 22, 443 } accept\n\t\tudp dport { 51820 } accept\n\t\tiifname \"wg0\""))
        #expect(table.contains("ip saddr { 10.43.0.0/16 } accept"))
        #expect(table.contains("ip6 saddr { fd42::/56 } accept"))
        #expect(!table.contains("6443 } accept\n\t\tudp dport { 51820 } accept\n\t\tcounter drop\n\t}\n\tchain input"), "6443 must not be public")
    }

    @Test func firewallPlanCreatesRepairsDriftAndRefusesARolledBackChange() throws {
        let p = try platform("  firewall: {publicInterface: eth0}\n")
        let r = FirewallReconciler(host: host)
        let desired = try #require(r.desired(from: p))
        let script = desired.ruleset.table
        let create = try r.plan(desired, .init(live: nil, applied: nil, reverted: nil))
        #expect(create.map(\.action) == [.create])
        let applied = FirewallState.Applied(script: script, listing: "LISTING")
        #expect(try r.plan(desired, .init(live: "LISTING", applied: applied, reverted: nil)).isEmpty)
        let drift = try r.plan(desired, .init(live: "EDITED", applied: applied, reverted: nil))
        #expect(drift.map(\.description) == ["~ nftables table inet nodeagent (drift: changed outside nodeagent)\n    -EDITED\n    +LISTING"])
        #expect(throws: ReconcileError.self) { try r.plan(desired, .init(live: "OLD", applied: nil, reverted: FirewallState.operatorMark + script)) }
        // Rolled back because nodeagent died mid-change (no operator involved): tried again.
        #expect(try r.plan(desired, .init(live: "OLD", applied: nil, reverted: script)).map(\.action) == [.update])
    }

    static let dump = """
        cHJpdmF0ZWtleXByaXZhdGVrZXlwcml2YXRla2V5eHg=\tU0VSVkVSUFVCU0VSVkVSUFVCU0VSVkVSUFVCU0VSVkU=\t51820\toff
        UEVFUkFQRUVSQVBFRVJBUEVFUkFQRUVSQVBFRVJBUEU=\t(none)\t198.51.100.2:40000\t10.8.0.2/32\t1764100000\t100\t200\t25
        UEVFUkJQRUVSQlBFRVJCUEVFUkJQRUVSQlBFRVJCUEU=\t(none)\t(none)\t10.8.0.3/32,10.9.0.0/24\t0\t0\t0\toff

        """

    @Test func wgDumpParses() throws {
        let d = try #require(WireGuardDevice.parse(dump: Self.dump))
        #expect(d.publicKey == "U0VSVkVSUFVCU0VSVkVSUFVCU0VSVkVSUFVCU0VSVkU=")
        #expect(!"\(d)".contains("cHJpdmF0ZWtleXByaXZhdGVrZXlwcml2YXRla2V5eHg="), "an observation must never print the private key")
        #expect(d.listenPort == 51820)
        #expect(d.peers.map(\.publicKey) == ["UEVFUkFQRUVSQVBFRVJBUEVFUkFQRUVSQVBFRVJBUEU=", "UEVFUkJQRUVSQlBFRVJCUEVFUkJQRUVSQlBFRVJCUEU="])
        #expect(d.peers[0].persistentKeepalive == 25 && d.peers[0].latestHandshake == 1_764_100_000)
        #expect(d.peers[1].allowedIPs == ["10.8.0.3/32", "10.9.0.0/24"] && d.peers[1].latestHandshake == nil)
        // Output that is not a dump is refused whole, never read as "no peers".
        for bad in ["", "garbage", "\(Self.dump)extra line\n", Self.dump.replacingOccurrences(of: "\t51820\t", with: "\tport\t")] {
            #expect(WireGuardDevice.parse(dump: bad) == nil, "\(bad)")
        }
    }

    @Test func wireguardPlanTouchesOnlyThePeersThatDiffer() throws {
        let laptop = "XuwNxBmqgze/cl8Cb9qceMHLHGQu6v+dbhES83eD6UI=", phone = "RVadpX9Le/Ry16hk70eBRRyuY4P+6fsK5AxZqhzkdbc="
        let p = try platform("""
              wireguard:
                address: 10.8.0.1/24
                peers:
                  - {name: laptop, publicKey: "\(laptop)", allowedIPs: [10.8.0.2/32]}
                  - {name: phone, publicKey: "\(phone)", allowedIPs: [10.8.0.3/32], persistentKeepalive: 25}

            """)
        let r = WireGuardReconciler(host: host)
        let spec = try #require(r.desired(from: p))
        let link = WireGuardLink(exists: true, up: true, mtu: 1420, addresses: ["10.8.0.1/24"])
        let stale = WireGuardDevice.Peer(publicKey: "GONE", presharedKey: nil, allowedIPs: ["10.8.0.9/32"], persistentKeepalive: nil, latestHandshake: nil)
        let laptopLive = WireGuardDevice.Peer(publicKey: laptop, presharedKey: nil, allowedIPs: ["10.8.0.2/32"], persistentKeepalive: nil, latestHandshake: 5)
        let phoneLive = WireGuardDevice.Peer(publicKey: phone, presharedKey: nil, allowedIPs: ["10.8.0.3/32"], persistentKeepalive: nil, latestHandshake: nil)
        let observed = WireGuardReconciler.Observed(
            privateKey: Array("cHJpdmF0ZQ==\n".utf8), link: link,
            device: WireGuardDevice(privateKey: "cHJpdmF0ZQ==", publicKey: "SERVERPUB=", listenPort: 51820, peers: [laptopLive, phoneLive, stale]),
            configFile: Array(WireGuardConfig.server(spec).utf8), presharedKeys: [:])
        #expect(try r.plan(spec, observed).map(\.description) == [
            "~ wireguard peer phone keepalive off → 25",
            "- wireguard peer GONE 10.8.0.9/32",
        ])
        var converged = observed
        converged.device?.peers = [laptopLive, WireGuardDevice.Peer(publicKey: phone, presharedKey: nil, allowedIPs: ["10.8.0.3/32"],
                                                                     persistentKeepalive: 25, latestHandshake: nil)]
        #expect(try r.plan(spec, converged).isEmpty)
    }

    @Test func syncConfigAlwaysStatesKeepaliveAndPresharedKey() throws {
        let p = try DesiredStateLoader.load(path: Fixtures.example)
        let spec = try #require(p.spec.wireguard)
        let text = WireGuardConfig.sync(spec, privateKey: "KEY", presharedKeys: [:])
        // syncconf leaves a field it is not given as it was: "none" has to be said.
        #expect(text.contains("AllowedIPs = 10.8.0.2/32\nPersistentKeepalive = 0\nPresharedKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
        #expect(text.contains("AllowedIPs = 10.8.0.3/32\nPersistentKeepalive = 25\n"))
    }

    @Test func malformedKeyFilesAreNamedWithoutTheirContent() {
        do {
            _ = try WireGuardReconciler.key(Array("not a key but maybe a secret\n".utf8), file: "/etc/nodeagent/secrets/wg0.key")
            Issue.record("accepted")
        } catch {
            #expect("\(error)".contains("/etc/nodeagent/secrets/wg0.key does not hold one WireGuard key"))
            #expect(!"\(error)".contains("maybe a secret"))
        }
    }

    @Test func clientConfigPointsAtTheNodeAndHoldsNoSecret() throws {
        let p = try DesiredStateLoader.load(path: Fixtures.example)
        let spec = try #require(p.spec.wireguard)
        let text = WireGuardConfig.client(spec, peer: spec.peers[1], serverPublicKey: "SERVERPUB=")
        #expect(text.contains("PrivateKey = <PRIVATE KEY OF phone>\nAddress = 10.8.0.3/32\n"))
        #expect(text.contains("PublicKey = SERVERPUB=\nEndpoint = vps-1.example.com:51820\nAllowedIPs = 10.8.0.0/24\nPersistentKeepalive = 25\n"))
        // With a cluster, the laptop routes its Services through the tunnel too (Grafana's,
        // Argo CD's ClusterIP), next to the VPN subnet (PostgreSQL's LoadBalancer on 10.8.0.1).
        let routed = WireGuardConfig.client(spec, peer: spec.peers[1], serverPublicKey: "SERVERPUB=", routes: [try #require(p.spec.k3s).serviceCIDR])
        #expect(routed.contains("AllowedIPs = 10.8.0.0/24, 10.43.0.0/16\n"), "\(routed)")
        let server = WireGuardConfig.server(spec)
        #expect(server.contains("PostUp = wg set %i private-key /etc/nodeagent/secrets/wg0.key"))
        #expect(!server.contains("PrivateKey"))
    }

    @Test func osPlanCoversSysctlKeysAndSSHD() throws {
        let p = try platform("""
              os:
                ssh: {port: 2222, authorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJyusluo6f+skZyxlCrGC9pbW+J0mbl297SaO3yWJ6Fk a@b"]}
                sysctl: {net.ipv4.ip_forward: 1, net.ipv4.ip_local_port_range: "1024 65000"}

            """)
        let r = OSReconciler(host: host)
        let spec = try #require(r.desired(from: p))
        let observed = OSReconciler.Observed(
            sysctlFile: nil, sysctlLive: ["net.ipv4.ip_forward": "0", "net.ipv4.ip_local_port_range": "1024 65000"],
            sshdDropIn: nil, authorizedKeys: nil, account: .init(uid: 0, gid: 0, home: "/root"))
        let changes = try r.plan(spec, observed)
        #expect(changes.map { "\($0.action.symbol) \($0.subject)" } == [
            "+ file /etc/sysctl.d/90-nodeagent.conf", "~ sysctl net.ipv4.ip_forward",
            "+ file /root/.ssh/authorized_keys", "+ file /etc/ssh/sshd_config.d/10-nodeagent.conf",
        ])
        #expect(OSReconciler.sshdDropIn(try #require(spec.ssh)).contains("Port 2222\nPubkeyAuthentication yes\nPasswordAuthentication no\n"))
        #expect(OSReconciler.normalise("1024\t65000\n") == "1024 65000")
        var unknown = observed
        unknown.sysctlLive["net.ipv4.ip_forward"] = .some(nil)
        #expect(throws: ReconcileError.self) { try r.plan(spec, unknown) }
    }

    @Test func sshdIncludesAreRootedForChecksInATestRoot() {
        let text = "Port 22\nInclude /etc/ssh/sshd_config.d/*.conf\ninclude extra.conf\n"
        #expect(SSHDConfig.rootIncludes(text, root: "/r") == "Port 22\nInclude /r/etc/ssh/sshd_config.d/*.conf\nInclude /r/etc/ssh/extra.conf\n")
        #expect(SSHDConfig.rootIncludes(text, root: "/") == text)
    }
}
