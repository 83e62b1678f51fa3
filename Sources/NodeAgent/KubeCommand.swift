import ArgumentParser
import KubeClient
import YAML

struct KubeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kube",
        abstract: "Talk to the cluster through nodeagent's own Kubernetes client (for debugging on a node).",
        subcommands: [KubeGet.self]
    )
}

struct KubeGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Show objects of a kind, or one object.",
        discussion: "KIND is a plural, singular or kind name, optionally with its group: nodes, configmap, helmcharts.helm.cattle.io."
    )

    @Argument(help: "The kind of object.")
    var kind: String

    @Argument(help: "One object's name.")
    var name: String?

    @Option(name: .shortAndLong, help: "The namespace (default: default, for namespaced kinds).")
    var namespace: String?

    @Flag(name: [.customShort("A"), .long], help: "Objects of every namespace.")
    var allNamespaces = false

    @Option(name: .long, help: ArgumentHelp("The kubeconfig K3s writes.", valueName: "FILE"))
    var kubeconfig = "/etc/rancher/k3s/k3s.yaml"

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() async throws {
        let config: Kubeconfig
        do {
            config = try Kubeconfig.load(path: kubeconfig)
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ExitCode.failure
        }
        let api = KubeAPI(config: config, retry: RetryPolicy(attempts: 3))
        do {
            guard let (base, namespaced) = try await api.resolve(kind) else {
                throw ValidationError("the server has no resource type \"\(kind)\"")
            }
            var ref = base
            if namespaced, !allNamespaces { ref.namespace = namespace ?? config.namespace ?? "default" }
            ref.name = name
            if name != nil {
                let object = try await api.get(ref)
                print(output == .json ? object.jsonText : Self.table([object], namespaced: namespaced && allNamespaces), terminator: "")
            } else {
                let items = try await api.list(ref)
                print(output == .json ? JSONValue.object(["items": .array(items)]).jsonText
                      : Self.table(items, namespaced: namespaced && allNamespaces), terminator: output == .json ? "\n" : "")
            }
        } catch let error as KubeStatusError {
            Terminal.error("Error from server (\(error.reason)): \(error.message)")
            throw ExitCode.failure
        } catch let error as TransportError {
            Terminal.error("Error: cannot reach \(config.server): \(error)")
            throw ExitCode.failure
        }
    }

    /// NAME (with NAMESPACE for -A), STATUS for nodes, CREATED.
    static func table(_ items: [JSONValue], namespaced: Bool) -> String {
        if items.isEmpty { return "No resources found.\n" }
        let isNode = items.first?["kind"]?.string == "Node" || KubeViews.nodeReady(items[0]) != nil
        var rows = [(namespaced ? ["NAMESPACE"] : []) + ["NAME"] + (isNode ? ["STATUS"] : []) + ["CREATED"]]
        for o in items {
            var row = namespaced ? [o["metadata"]?["namespace"]?.string ?? ""] : []
            row.append(o["metadata"]?["name"]?.string ?? "")
            if isNode { row.append(KubeViews.nodeReady(o) == "True" ? "Ready" : "NotReady") }
            row.append(o["metadata"]?["creationTimestamp"]?.string ?? "")
            rows.append(row)
        }
        let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count + 3) }.joined()
        }.joined(separator: "\n") + "\n"
    }
}
