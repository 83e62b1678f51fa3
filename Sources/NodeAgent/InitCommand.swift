#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Reconcilers
import YAML

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a starter platform.yaml, agent.yaml and cloud-init user-data for a new node.",
        discussion: """
            Commit platform.yaml to the repository given by --repo; give user-data.yaml to the VPS provider.
            The starter opens 22/80/443 tcp and the WireGuard port, keeps the API, status and PostgreSQL
            ports behind WireGuard, and gives each --peer an address in 10.8.0.0/24.
            """
    )

    @Option(name: .long, help: "The node's name (a DNS label).")
    var name: String

    @Option(name: .long, help: ArgumentHelp("The Git repository that will hold platform.yaml.", valueName: "URL"))
    var repo: String

    @Option(name: .long, help: "The branch to follow.")
    var ref = "main"

    @Option(name: .long, help: ArgumentHelp("The node's public host name or address, for WireGuard clients.", valueName: "HOST"))
    var endpoint: String

    @Option(name: .long, help: "The public network interface.")
    var publicInterface = "eth0"

    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp("An SSH public key allowed to log in as root (repeatable).", valueName: "KEY"))
    var sshKey: [String] = []

    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp("A WireGuard peer, NAME=PUBLICKEY (repeatable).", valueName: "NAME=KEY"))
    var peer: [String] = []

    @Option(name: .long, help: ArgumentHelp("Where the node downloads the nodeagent binary.", valueName: "URL"))
    var binaryURL = "REPLACE_ME_BINARY_URL"

    @Option(name: .long, help: ArgumentHelp("The binary's sha256.", valueName: "HEX"))
    var binarySha256 = "REPLACE_ME_SHA256"

    @Option(name: .long, help: ArgumentHelp("Directory to write into.", valueName: "DIR"))
    var output = "."

    @Flag(name: .long, help: "Overwrite existing files.")
    var force = false

    @Flag(name: .long, help: "Write `recover: offsite` into the agent config: a VPS booted from this user-data restores the node from spec.backups.offsite when it has no state of its own.")
    var recoverOffsite = false

    func run() async throws {
        let peers = try peer.enumerated().map { i, spec -> String in
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--peer takes NAME=PUBLICKEY, not \(spec)") }
            return "      - {name: \(parts[0]), publicKey: \"\(parts[1])\", allowedIPs: [10.8.0.\(i + 2)/32]}"
        }
        let keys = sshKey.map { "        - \"\($0)\"" }
        let platform = """
            # Desired state of \(name), written by `nodeagent init`. Commit it to \(repo).
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: \(name)}
            spec:
              os:
                ssh:
                  port: 22
                  passwordAuthentication: false
                  permitRootLogin: prohibit-password
            \(keys.isEmpty ? "      authorizedKeys: []" : "      authorizedKeys:\n" + keys.joined(separator: "\n"))
                sysctl: {net.ipv4.ip_forward: "1"}
              firewall:
                publicInterface: \(publicInterface)
                public: {tcp: [22, 80, 443], udp: [51820]}
                vpnOnly: {tcp: [6443, 9430, 5432]}
              wireguard:
                interface: wg0
                address: 10.8.0.1/24
                listenPort: 51820
                endpoint: \(endpoint)
                privateKeyFile: /etc/nodeagent/secrets/wg0.key
            \(peers.isEmpty ? "    peers: []" : "    peers:\n" + peers.joined(separator: "\n"))
              status: {listen: "10.8.0.1:9430", tokenFile: /etc/nodeagent/secrets/api-token}

            """
        // Whatever the flags, what is written is a valid desired state.
        do {
            _ = try DesiredStateLoader.load(Array(platform.utf8), file: "platform.yaml")
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ValidationError("the flags do not make a valid desired state (see above)")
        }
        let agent = """
            apiVersion: nodeagent/v1
            kind: AgentConfig
            source: {repo: \(JSONValue.string(repo).jsonText), ref: \(JSONValue.string(ref).jsonText), path: platform.yaml}
            intervals: {poll: 60s, drift: 5m}
            stateDirectory: /var/lib/nodeagent
            kubeconfig: /etc/rancher/k3s/k3s.yaml
            \(recoverOffsite ? "recover: offsite\n" : "")
            """
        // The agent config is checked as the node will read it: a token in the URL, a ref that
        // is not a ref, a quote or a newline are refused here, not on the VPS.
        do {
            _ = try AgentConfig.parse(Array(agent.utf8), file: "agent.yaml")
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ValidationError("--repo or --ref is not usable (see above)")
        }
        try InstallFiles.checkBinary(url: binaryURL, sha256: binarySha256)
        let files = RootedFileSystem()
        let directory = WorkingDirectory.absolute(output)
        let outputs = [("platform.yaml", platform), ("agent.yaml", agent),
                       ("user-data.yaml", InstallFiles.userData(repo: repo, ref: ref, binaryURL: binaryURL, sha256: binarySha256,
                                                                 recoverOffsite: recoverOffsite))]
        for (file, _) in outputs where !force {
            if try files.read("\(directory)/\(file)") != nil { throw ValidationError("\(directory)/\(file) exists; use --force to overwrite") }
        }
        for (file, text) in outputs {
            // user-data.yaml and agent.yaml tell where the source is: for the operator only.
            try files.write("\(directory)/\(file)", Array(text.utf8), mode: file == "platform.yaml" ? 0o644 : 0o600)
            print("wrote \(directory)/\(file)")
        }
        if binaryURL.hasPrefix("REPLACE_ME") { print("note: pass --binary-url and --binary-sha256, or edit user-data.yaml before use") }
    }

}
