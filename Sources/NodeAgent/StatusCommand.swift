import ArgumentParser
import KubeClient
import Reconcilers
import YAML

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the agent's /status as a table (or, with -o json, as it is)."
    )

    @Option(name: .long, help: ArgumentHelp("The agent's address (default: spec.status.listen of the applied revision, else 127.0.0.1:9430).",
                                            valueName: "URL"))
    var url: String?

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() async throws {
        let base = url ?? Self.defaultURL()
        let transport = CurlTransport(config: Kubeconfig(server: base, caPEM: nil))
        let response: HTTPResponse
        do {
            response = try await transport.send(HTTPRequest("GET", "/status", timeout: .seconds(10)))
        } catch {
            Terminal.error("error: cannot reach \(base): \(error)")
            throw ExitCode.failure
        }
        guard response.status == 200, let status = JSONValue.parse(response.body) else {
            Terminal.error("error: \(base)/status answered \(response.status)")
            throw ExitCode.failure
        }
        if output == .json {
            print(status.jsonText)
        } else {
            print(Self.render(status), terminator: "")
        }
    }

    static func defaultURL() -> String {
        if let bytes = (try? Host.node(root: "/").files.read(ReconcileLoop.appliedFile)) ?? nil,
           let p = try? DesiredStateLoader.load(bytes, file: ReconcileLoop.appliedFile),
           let listen = p.spec.status?.listen {
            return "http://\(listen)"
        }
        return "http://127.0.0.1:9430"
    }

    static func render(_ status: JSONValue) -> String {
        let s = sanitised(status)
        let name = s["applied"]?["name"]?.string ?? "(nothing applied)"
        let applied = s["applied"]?["commit"]?.string.map { String($0.prefix(12)) } ?? "-"
        var out = "\(name)  applied \(applied)  \(s["converged"] == .bool(true) ? "converged" : "NOT converged")\n"
        if s["source"]?["ok"] == .bool(false) {
            out += "source refused: \(s["source"]?["reason"]?.string ?? "?"): \(s["source"]?["message"]?.string ?? "")\n"
            for e in s["source"]?["errors"]?.array ?? [] { out += "  \(e.string ?? "")\n" }
        }
        let needsHuman = (s["needsHuman"]?.array ?? []).compactMap(\.string)
        if !needsHuman.isEmpty { out += "needs a person (retrying cannot help): \(needsHuman.joined(separator: ", "))\n" }
        if let key = s["wireguard"]?["publicKey"]?.string { out += "wireguard public key \(key)\n" }
        var rows = [["RECONCILER", "STATUS", "REASON", "MESSAGE"]]
        for r in s["reconcilers"]?.array ?? [] {
            rows.append([r["name"]?.string ?? "", r["status"]?.string ?? "", r["reason"]?.string ?? "", r["message"]?.string ?? ""])
        }
        let widths = (0..<3).map { i in rows.map { $0[i].count }.max() ?? 0 }
        for row in rows {
            out += row.enumerated().map { i, c in i < 3 ? c + String(repeating: " ", count: widths[i] - c.count + 2) : c }.joined() + "\n"
        }
        let events = s["events"]?.array ?? []
        if !events.isEmpty {
            out += "recent events:\n"
            for e in events.suffix(5) {
                out += "  \(e["reconciler"]?.string.map { "[\($0)] " } ?? "")\(e["message"]?.string ?? "")\n"
            }
        }
        return out
    }

    /// Every string of the status made safe for a terminal (`TerminalText`).
    static func sanitised(_ value: JSONValue) -> JSONValue {
        switch value {
        case .string(let text): return .string(TerminalText.sanitised(text))
        case .array(let items): return .array(items.map(sanitised))
        case .object(let members): return .object(members.map { JSONValue.Member($0.key, sanitised($0.value)) })
        default: return value
        }
    }
}
