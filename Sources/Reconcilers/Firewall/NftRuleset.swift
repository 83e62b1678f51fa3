/// Renders `spec.firewall` as one nftables table, `table inet nodeagent`, for IPv4 and IPv6.
///
/// Two chains, because kube-proxy and ServiceLB DNAT NodePort and LoadBalancer traffic in
/// `prerouting` (priority -100, dstnat) and then *forward* it: an `input` filter alone never
/// sees those packets. So:
///
/// ```
///  public interface ──► prerouting (priority -150, before DNAT) ──► DNAT ──► forward ──► pods
///                        only public ports, established,           │
///                        ICMP essentials; everything else dropped  └──► input (priority 0, policy drop)
///  wg0 / lo / cni0 ───► prerouting: accepted ─────────────────────────► input: public ports,
///                                                                        vpnOnly ports on wg0, K3s traffic
/// ```
///
/// Nothing else is touched: K3s, kube-proxy, flannel and Docker keep their own tables.
public struct NftRuleset: Sendable, Equatable {
    public static let table = "inet nodeagent"

    /// The interfaces the internet reaches; the first is "the" public interface.
    public var publicInterfaces: [String]
    public var publicInterface: String { publicInterfaces[0] }
    public var publicTCP: [Port]
    public var publicUDP: [Port]
    public var vpnInterface: String?
    public var vpnTCP: [Port]
    public var vpnUDP: [Port]
    /// Pod and service networks, whose traffic to the node is K3s's own.
    public var clusterNetworks: [IPNetwork]
    /// nodeagent's status port: for WireGuard peers and loopback only, never for pods (which
    /// the cluster rules below would otherwise let in).
    public var statusPort: Port?

    public init(_ spec: FirewallSpec, vpnInterface: String?, clusterNetworks: [IPNetwork], statusPort: Port? = nil) {
        self.statusPort = statusPort
        publicInterfaces = spec.publicInterfaces.map(\.name)
        publicTCP = spec.public.tcp
        publicUDP = spec.public.udp
        self.vpnInterface = vpnInterface
        vpnTCP = spec.vpnOnly.tcp
        vpnUDP = spec.vpnOnly.udp
        self.clusterNetworks = clusterNetworks
    }

    /// The table's body, as `nft -f` reads it.
    public var table: String {
        var pre: [String] = [
            "type filter hook prerouting priority -150; policy accept;",
            publicInterfaces.count == 1 ? "iifname != \(quote(publicInterface)) accept"
                : "iifname != { \(publicInterfaces.map(quote).joined(separator: ", ")) } accept",
        ]
        pre += Self.stateAndICMP
        pre += portRules(prefix: "", tcp: publicTCP, udp: publicUDP)
        pre.append("counter drop")

        var input: [String] = [
            "type filter hook input priority filter; policy drop;",
            "iif \"lo\" accept",
        ]
        input += Self.stateAndICMP
        // The status port: from loopback (accepted above) and the WireGuard interface only,
        // never from pods or another interface, whatever the port lists say.
        if let statusPort {
            let allowed = ["\"lo\""] + (vpnInterface.map { [quote($0)] } ?? [])
            input.append("iifname != { \(allowed.joined(separator: ", ")) } tcp dport \(statusPort) drop")
        }
        // Public ports on every interface: prerouting has already limited the public one, and a
        // misnamed public interface must not shut SSH on the real one.
        input += portRules(prefix: "", tcp: publicTCP, udp: publicUDP)
        if let vpn = vpnInterface {
            input += portRules(prefix: "iifname \(quote(vpn)) ", tcp: vpnTCP, udp: vpnUDP)
        }
        input.append("iifname { \"cni0\", \"flannel.1\" } accept")
        let v4 = clusterNetworks.filter(\.address.isIPv4).map(\.description)
        let v6 = clusterNetworks.filter { !$0.address.isIPv4 }.map(\.description)
        if !v4.isEmpty { input.append("ip saddr { \(v4.joined(separator: ", ")) } accept") }
        if !v6.isEmpty { input.append("ip6 saddr { \(v6.joined(separator: ", ")) } accept") }
        input.append("counter drop")

        return """
            table inet nodeagent {
            \tcomment "managed by nodeagent: changes made by hand are reverted"
            \tchain prerouting {
            \(pre.map { "\t\t" + $0 }.joined(separator: "\n"))
            \t}
            \tchain input {
            \(input.map { "\t\t" + $0 }.joined(separator: "\n"))
            \t}
            }

            """
    }

    /// One transaction that replaces only our table: creating it first makes the delete valid
    /// when it does not exist yet. `nft -f` applies all of it or none of it.
    public var transaction: String { Self.transaction(for: table) }

    public static func transaction(for table: String) -> String {
        "table inet nodeagent\ndelete table inet nodeagent\n" + table
    }

    static let stateAndICMP = [
        "ct state established,related accept",
        "ct state invalid drop",
        "icmp type { destination-unreachable, time-exceeded, parameter-problem } accept",
        "icmp type echo-request limit rate 10/second accept",
        // Neighbour discovery and path-MTU discovery: IPv6 breaks without them.
        "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept",
        "icmpv6 type echo-request limit rate 10/second accept",
    ]

    private func portRules(prefix: String, tcp: [Port], udp: [Port]) -> [String] {
        var out: [String] = []
        if !tcp.isEmpty { out.append("\(prefix)tcp dport { \(unique(tcp).map(\.description).joined(separator: ", ")) } accept") }
        if !udp.isEmpty { out.append("\(prefix)udp dport { \(unique(udp).map(\.description).joined(separator: ", ")) } accept") }
        return out
    }

    private func unique(_ ports: [Port]) -> [Port] {
        var seen = Set<Port>()
        return ports.filter { seen.insert($0).inserted }
    }

    private func quote(_ name: String) -> String { "\"\(name)\"" }
}
