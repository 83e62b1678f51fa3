import Foundation
public import Reconcilers
#if canImport(Glibc)
import Glibc
#endif

/// A simulated internet in network namespaces that the test creates and always removes:
///
/// ```
///  internet (router)  203.0.113.254 ──── 203.0.113.1  eth0 ┐
///                     198.51.100.254 ─┐                     vps ── cni0 10.42.0.1 ──── 10.42.0.10 pod
///                                     └─ 198.51.100.2 eth0  admin     (kube-proxy DNAT: tcp/30080 → pod:8080)
/// ```
///
/// Every name carries a unique id, so labs of concurrent runs never meet. Only the addresses of
/// the documentation ranges and of the lab's own networks are used.
public final class NetworkLab: @unchecked Sendable {
    public let id: String
    public let internet: String
    public let vps: String
    public let admin: String
    public let pod: String
    /// A temp directory standing for the vps's `/`.
    public let root: String
    private var background: [Int32] = []
    private var wireguardInterfaces: [String] = []
    let runner = SystemCommandRunner()

    public static let vpsPublic = "203.0.113.1"
    public static let internetAddress = "203.0.113.254"

    public init() async throws {
        var random = SystemRandomNumberGenerator()
        id = String(random.next() % 0xFFFFF, radix: 16)
        internet = "na\(id)i"
        vps = "na\(id)v"
        admin = "na\(id)a"
        pod = "na\(id)p"
        root = Fixtures.temporaryDirectory()
        do {
            try await build()
        } catch {
            await destroy()
            throw error
        }
    }

    private func build() async throws {
        for ns in [internet, vps, admin, pod] { try await sh(["ip", "netns", "add", ns]) }
        try await link(vps, "eth0", "\(Self.vpsPublic)/24", internet, "tovps", "\(Self.internetAddress)/24")
        try await link(admin, "eth0", "198.51.100.2/24", internet, "toadmin", "198.51.100.254/24")
        try await link(vps, "cni0", "10.42.0.1/24", pod, "eth0", "10.42.0.10/24")
        try await inside(internet, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        try await inside(vps, ["ip", "route", "add", "default", "via", Self.internetAddress])
        try await inside(admin, ["ip", "route", "add", "default", "via", "198.51.100.254"])
        try await inside(pod, ["ip", "route", "add", "default", "via", "10.42.0.1"])
        // kube-proxy's part, simulated: a NodePort DNAT'ed to a pod in prerouting.
        try await inside(vps, ["nft", "-f", "-"], input: """
            table ip kubeproxy {
                chain prerouting { type nat hook prerouting priority dstnat; tcp dport 30080 dnat to 10.42.0.10:8080; }
            }
            """)
    }

    private func link(_ a: String, _ aName: String, _ aAddr: String, _ b: String, _ bName: String, _ bAddr: String) async throws {
        let tmpA = "n\(id)\(a.suffix(1))\(bName.prefix(2))", tmpB = "n\(id)\(b.suffix(1))\(aName.prefix(2))x"
        try await sh(["ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB])
        try await sh(["ip", "link", "set", tmpA, "netns", a, "name", aName])
        try await sh(["ip", "link", "set", tmpB, "netns", b, "name", bName])
        for (ns, name, addr) in [(a, aName, aAddr), (b, bName, bAddr)] {
            try await inside(ns, ["ip", "addr", "add", addr, "dev", name])
            try await inside(ns, ["ip", "link", "set", name, "up"])
            try await inside(ns, ["ip", "link", "set", "lo", "up"])
        }
    }

    /// Runs a command in a namespace and requires success.
    @discardableResult
    public func inside(_ ns: String, _ argv: [String], input: String? = nil, environment: [String: String?] = [:]) async throws -> CommandResult {
        try await sh(["ip", "netns", "exec", ns] + argv, input: input, environment: environment)
    }

    /// Runs a command in a namespace; a non-zero exit is a result.
    public func run(_ ns: String, _ argv: [String], input: String? = nil, environment: [String: String?] = [:],
                    timeout: Duration = .seconds(60)) async throws -> CommandResult {
        try await runner.run(Command("ip", ["netns", "exec", ns] + argv, environment: environment,
                                     input: input.map { Array($0.utf8) }, timeout: timeout))
    }

    @discardableResult
    private func sh(_ argv: [String], input: String? = nil, environment: [String: String?] = [:]) async throws -> CommandResult {
        try await runner.check(Command(argv[0], Array(argv.dropFirst()), environment: environment,
                                       input: input.map { Array($0.utf8) }, timeout: .seconds(60)))
    }

    /// Starts a long-running program in a namespace; it is stopped by `destroy()`.
    public func start(_ ns: String, _ argv: [String]) throws {
        background.append(try DetachedProcess.spawn(["/usr/sbin/ip", "netns", "exec", ns] + argv))
    }

    /// Starts the test listener (Tests/Fixtures/netlab/listen.py) and waits until it answers.
    public func listen(_ ns: String, address: String, ports: [String]) async throws {
        try start(ns, ["python3", Fixtures.repository + "/Tests/Fixtures/netlab/listen.py"] + ports)
        let firstTCP = ports.first { !$0.hasPrefix("udp:") }!
        for _ in 0..<50 {
            if try await probe(from: ns, to: address, [firstTCP])[firstTCP.contains(":") ? firstTCP : "tcp/\(firstTCP)"] == true { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CommandError(code: .failed, command: "listen.py", message: "listeners in \(ns) did not come up")
    }

    /// Probes ports from a namespace. Keys are `tcp/PORT` or `udp/PORT`; true when it answered.
    public func probe(from ns: String, to host: String, _ ports: [String]) async throws -> [String: Bool] {
        let r = try await inside(ns, ["python3", Fixtures.repository + "/Tests/Fixtures/netlab/probe.py", host] + ports)
        var out: [String: Bool] = [:]
        for line in r.stdout.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2 { out[String(f[0])] = f[1] == "open" }
        }
        return out
    }

    /// Remembers a wireguard-go interface, whose process `destroy()` must end.
    public func track(wireguard interface: String) {
        wireguardInterfaces.append(interface)
    }

    /// Removes everything the lab made. Safe to call twice.
    public func destroy() async {
        for pid in background { DetachedProcess.stop(pid) }
        background = []
        // wireguard-go outlives its namespace: end every one this lab started, tracked or not
        // (their interfaces all carry the lab's unique id: naIDg, naIDc…), by PID.
        for pattern in wireguardInterfaces.map({ "wireguard-go \($0)$" }) + ["wireguard-go na\(id)[a-z]$"] {
            let r = try? await runner.run(Command("pgrep", ["-f", pattern]))
            for pid in (r?.stdout ?? "").split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGTERM) }
        }
        for ns in [internet, vps, admin, pod] {
            _ = try? await runner.run(Command("ip", ["netns", "del", ns]))
        }
        try? FileManager.default.removeItem(atPath: root)
    }
}
