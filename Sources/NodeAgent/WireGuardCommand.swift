import ArgumentParser
import Reconcilers
import YAML

struct WireGuardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wireguard",
        abstract: "WireGuard helpers.",
        subcommands: [ClientConfig.self]
    )
}

struct ClientConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client-config",
        abstract: "Print a ready wg-quick config for one peer (and a QR code with --qr, when qrencode is installed).",
        discussion: """
            Run it on the node: the node's public key comes from its private key file. The peer's own
            private key never exists on the node, so its line is a placeholder to fill in.
            """
    )

    @Argument(help: "The peer's name in spec.wireguard.peers.")
    var peer: String

    @Option(name: .long, help: ArgumentHelp("The desired-state file (default: the revision the agent last applied).", valueName: "FILE"))
    var state: String?

    @Option(name: .long, help: ArgumentHelp("Directory that stands for / on the node.", valueName: "DIR"))
    var root: String = "/"

    @Option(name: .long, help: ArgumentHelp("The node's WireGuard public key, when not run on the node.", valueName: "KEY"))
    var serverPublicKey: String?

    @Flag(name: .long, help: "Also print the config as a terminal QR code (needs qrencode).")
    var qr = false

    func run() async throws {
        let platform = try StateOptions.load(state: state, root: root)
        guard let spec = platform.spec.wireguard else {
            throw ValidationError("the desired state declares no spec.wireguard")
        }
        guard let entry = spec.peers.first(where: { $0.name.value == peer }) else {
            let names = spec.peers.map(\.name.value)
            let guess = Suggestion.closest(to: peer, in: names).map { " (did you mean \"\($0)\"?)" } ?? ""
            throw ValidationError("no peer named \"\(peer)\"\(guess); peers: \(names.joined(separator: ", "))")
        }
        let host = Host.node(root: root)
        let publicKey: String
        if let serverPublicKey {
            publicKey = serverPublicKey
        } else {
            guard let key = try host.files.readSecret(spec.privateKeyFile.value, limit: 4096) else {
                throw ValidationError("\(spec.privateKeyFile) does not exist: run this on the node after `nodeagent apply`, or pass --server-public-key")
            }
            publicKey = String(decoding: try await host.commands.check(Command("wg", ["pubkey"], input: key)).stdout.utf8, as: UTF8.self)
                .split(separator: "\n").first.map(String.init) ?? ""
        }
        // With a cluster, its Services too: `curl http://CLUSTER-IP` from the laptop, no port-forward.
        let config = WireGuardConfig.client(spec, peer: entry, serverPublicKey: publicKey, routes: platform.spec.k3s.map { [$0.serviceCIDR] } ?? [])
        print(config, terminator: "")
        if qr {
            let r = try await host.commands.run(Command("qrencode", ["-t", "ansiutf8"], input: Array(config.utf8)))
            guard r.succeeded else { throw ValidationError("qrencode failed: \(r.stderr)") }
            print(r.stdout, terminator: "")
        }
    }
}
