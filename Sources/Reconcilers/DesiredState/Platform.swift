public import YAML
import Foundation

/// The desired state of one node: the typed form of `platform.yaml`.
///
/// Every `spec` section is optional; an omitted section means nodeagent does not manage it.
public struct Platform: Sendable, Equatable {
    public var name: DNSLabel
    public var spec: Spec

    public struct Spec: Sendable, Equatable {
        public var os: OSSpec?
        public var firewall: FirewallSpec?
        public var wireguard: WireGuardSpec?
        public var k3s: K3sSpec?
        public var helmReleases: [HelmRelease]?
        public var argocd: ArgoCDSpec?
        public var alerting: AlertingSpec?
        public var backups: BackupsSpec?
        public var status: StatusSpec?
    }

    public static let apiVersion = "nodeagent/v1"
    public static let kind = "Platform"
}

extension Platform: YAMLDecodable {
    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["apiVersion", "kind", "metadata", "spec"])
        let apiVersion = try r.required("apiVersion", as: String.self)
        guard apiVersion == Platform.apiVersion else {
            throw context.fail(.invalidValue, "apiVersion must be \"\(Platform.apiVersion)\", not \"\(apiVersion)\"",
                               at: r.node("apiVersion")!.mark, path: path + "apiVersion")
        }
        let kind = try r.required("kind", as: String.self)
        guard kind == Platform.kind else {
            throw context.fail(.invalidValue, "kind must be \"\(Platform.kind)\" in a desired-state file, not \"\(kind)\"",
                               at: r.node("kind")!.mark, path: path + "kind")
        }
        let metadata = try MappingReader(r.node("metadata") ?? YAMLNode(.mapping([]), mark: node.mark),
                                         path: path + "metadata", context: context, keys: ["name"])
        var failed = false
        let name: DNSLabel? = Self.attempt(&failed) { try metadata.required("name") }
        let spec: Spec? = Self.attempt(&failed) { try r.required("spec") }
        try metadata.finish()
        try r.finish()
        guard !failed, let name, let spec else { throw DecodeFailure() }
        self.name = name
        self.spec = spec
    }

    /// Runs one read, turning its failure (already reported) into a flag, so that sibling
    /// sections are still checked and every error shows in one run.
    static func attempt<T>(_ failed: inout Bool, _ read: () throws -> T?) -> T? {
        do {
            return try read()
        } catch {
            failed = true
            return nil
        }
    }
}

extension Platform.Spec: YAMLDecodable {
    public static let sectionNames = ["os", "firewall", "wireguard", "k3s", "helmReleases", "argocd", "alerting", "backups", "status"]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: Self.sectionNames)
        var failed = false
        os = Platform.attempt(&failed) { try r.optional("os") }
        firewall = Platform.attempt(&failed) { try r.optional("firewall") }
        wireguard = Platform.attempt(&failed) { try r.optional("wireguard") }
        k3s = Platform.attempt(&failed) { try r.optional("k3s") }
        helmReleases = Platform.attempt(&failed) { try r.optional("helmReleases") }
        argocd = Platform.attempt(&failed) { try r.optional("argocd") }
        alerting = Platform.attempt(&failed) { try r.optional("alerting") }
        backups = Platform.attempt(&failed) { try r.optional("backups") }
        status = Platform.attempt(&failed) { try r.optional("status") }
        try r.finish()
        if failed { throw DecodeFailure() }
    }
}

// MARK: - os

public struct OSSpec: Sendable, Equatable, YAMLDecodable {
    public var ssh: SSHSpec?
    /// Kernel parameters, in file order: `net.ipv4.ip_forward: "1"`.
    public var sysctl: [SysctlSetting]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["ssh", "sysctl"])
        ssh = try r.optional("ssh")
        sysctl = []
        if let map = r.node("sysctl") {
            let sysctlPath = path + "sysctl"
            guard let pairs = map.mapping else {
                throw context.fail(.typeMismatch, "expected a mapping of sysctl keys to values, found \(map.kindDescription)",
                                   at: map.mark, path: sysctlPath)
            }
            for pair in pairs {
                let key = pair.key.scalar?.text ?? ""
                let at = sysctlPath + key
                guard SysctlSetting.isValidKey(key) else {
                    throw context.fail(.invalidValue, "\"\(key)\" is not a sysctl key (such as net.ipv4.ip_forward)", at: pair.key.mark, path: at)
                }
                guard let scalar = pair.value.scalar, !pair.value.isNull else {
                    throw context.fail(.typeMismatch, "expected a scalar value, found \(pair.value.kindDescription)", at: pair.value.mark, path: at)
                }
                sysctl.append(SysctlSetting(key: key, value: scalar.text))
            }
        }
        try r.finish()
    }
}

public struct SysctlSetting: Sendable, Equatable {
    public var key: String
    public var value: String

    static func isValidKey(_ key: String) -> Bool {
        !key.isEmpty && !key.hasPrefix(".") && !key.hasSuffix(".") && !key.contains("..")
            && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-/".contains($0)) }
    }
}

public struct SSHSpec: Sendable, Equatable, YAMLDecodable {
    public enum RootLogin: String, Sendable, CaseIterable, YAMLEnum {
        case yes, no
        case prohibitPassword = "prohibit-password"
        case forcedCommandsOnly = "forced-commands-only"
    }

    public var port: Port
    public var passwordAuthentication: Bool
    public var permitRootLogin: RootLogin
    /// Whose `authorized_keys` nodeagent writes.
    public var user: String
    public var authorizedKeys: [SSHPublicKey]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["port", "passwordAuthentication", "permitRootLogin", "user", "authorizedKeys"])
        port = try r.optional("port") ?? Port(22)!
        passwordAuthentication = try r.optional("passwordAuthentication") ?? false
        permitRootLogin = try r.optional("permitRootLogin") ?? .prohibitPassword
        user = try r.optional("user") ?? "root"
        authorizedKeys = try r.optional("authorizedKeys") ?? []
        try r.finish()
        guard user.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }), !user.isEmpty, !user.hasPrefix("-") else {
            throw context.fail(.invalidValue, "\"\(user)\" is not a user name", at: r.node("user")!.mark, path: path + "user")
        }
    }
}

enum EnumHelp {
    static func message(_ text: String, _ allowed: [String]) -> String {
        let guess = Suggestion.closest(to: text, in: allowed).map { " (did you mean \"\($0)\"?)" } ?? ""
        return "\"\(text)\" is not one of: \(allowed.joined(separator: ", "))\(guess)"
    }
}

/// A field that takes one of a fixed set of words; a typo gets a "did you mean".
public protocol YAMLEnum: YAMLScalarParsable, RawRepresentable<String>, CaseIterable {}

extension YAMLEnum {
    public init(parsing text: String) throws(InvalidValue) {
        guard let value = Self(rawValue: text) else {
            throw InvalidValue(EnumHelp.message(text, Self.allCases.map(\.rawValue)))
        }
        self = value
    }
}

// MARK: - firewall

public struct FirewallSpec: Sendable, Equatable, YAMLDecodable {
    public struct Ports: Sendable, Equatable, YAMLDecodable {
        public var tcp: [Port]
        public var udp: [Port]

        public init(tcp: [Port], udp: [Port]) {
            self.tcp = tcp
            self.udp = udp
        }

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["tcp", "udp"])
            tcp = try r.optional("tcp") ?? []
            udp = try r.optional("udp") ?? []
            try r.finish()
        }
    }

    /// The first (or only) public interface.
    public var publicInterface: InterfaceName { publicInterfaces[0] }
    /// Every interface the internet reaches (`publicInterface`, or `publicInterfaces` on a node
    /// with a second public NIC): each gets the pre-DNAT filter.
    public var publicInterfaces: [InterfaceName]
    /// Open to everyone on the public interface. Default: tcp 22, 80, 443; udp 51820.
    public var `public`: Ports
    /// Open on the WireGuard interface only.
    public var vpnOnly: Ports

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["publicInterface", "publicInterfaces", "public", "vpnOnly"])
        let one: InterfaceName? = try r.optional("publicInterface")
        let many: [InterfaceName]? = try r.optional("publicInterfaces")
        switch (one, many) {
        case (let one?, nil): publicInterfaces = [one]
        case (nil, let many?) where !many.isEmpty: publicInterfaces = many
        case (nil, _?):
            throw context.fail(.invalidValue, "publicInterfaces lists no interface", at: r.node("publicInterfaces")!.mark, path: path + "publicInterfaces")
        case (_?, _?):
            throw context.fail(.conflict, "set either publicInterface or publicInterfaces, not both", at: node.mark, path: path)
        case (nil, nil):
            throw context.fail(.missingField, "missing required field \"publicInterface\" (or \"publicInterfaces\", a list)", at: node.mark, path: path)
        }
        `public` = try r.optional("public") ?? Ports(tcp: [22, 80, 443].compactMap(Port.init), udp: [Port(51820)!])
        vpnOnly = try r.optional("vpnOnly") ?? Ports(tcp: [], udp: [])
        try r.finish()
    }
}

// MARK: - wireguard

public struct WireGuardSpec: Sendable, Equatable, YAMLDecodable {
    public enum Implementation: String, Sendable, CaseIterable, YAMLEnum {
        case auto, kernel, userspace
    }

    public struct Peer: Sendable, Equatable, YAMLDecodable {
        public var name: SimpleName
        public var publicKey: WireGuardKey
        public var allowedIPs: [IPNetwork]
        public var persistentKeepalive: Int?
        public var presharedKeyFile: AbsolutePath?

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["name", "publicKey", "allowedIPs", "persistentKeepalive", "presharedKeyFile"])
            name = try r.required("name")
            publicKey = try r.required("publicKey")
            allowedIPs = try r.required("allowedIPs")
            persistentKeepalive = try r.optional("persistentKeepalive")
            presharedKeyFile = try r.optional("presharedKeyFile")
            try r.finish()
            if allowedIPs.isEmpty {
                throw context.fail(.invalidValue, "a peer needs at least one allowed IP", at: r.node("allowedIPs")!.mark, path: path + "allowedIPs")
            }
            if let k = persistentKeepalive, !(0...65535).contains(k) {
                throw context.fail(.invalidValue, "persistentKeepalive must be 0-65535 seconds", at: r.node("persistentKeepalive")!.mark,
                                   path: path + "persistentKeepalive")
            }
        }
    }

    public var interface: InterfaceName
    public var address: InterfaceAddress
    public var listenPort: Port
    public var mtu: Int?
    public var implementation: Implementation
    /// The public host name or address clients dial; written into client configs.
    public var endpoint: HostOrIP?
    /// Generated on the node if missing (mode 0600); never leaves it.
    public var privateKeyFile: AbsolutePath
    public var peers: [Peer]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["interface", "address", "listenPort", "mtu", "implementation", "endpoint", "privateKeyFile", "peers"])
        interface = try r.optional("interface") ?? (try! InterfaceName(parsing: "wg0"))
        address = try r.required("address")
        listenPort = try r.optional("listenPort") ?? Port(51820)!
        mtu = try r.optional("mtu")
        implementation = try r.optional("implementation") ?? .auto
        endpoint = try r.optional("endpoint")
        privateKeyFile = try r.optional("privateKeyFile") ?? AbsolutePath("/etc/nodeagent/secrets/wg0.key")
        peers = try r.optional("peers") ?? []
        try r.finish()
        if let mtu, !(1280...9000).contains(mtu) {
            throw context.fail(.invalidValue, "mtu \(mtu) is outside 1280-9000", at: r.node("mtu")!.mark, path: path + "mtu")
        }
    }
}

// MARK: - k3s

public struct K3sSpec: Sendable, Equatable, YAMLDecodable {
    /// The packaged components K3s can be told not to deploy (`--disable`).
    public static let components = ["traefik", "servicelb", "local-storage", "metrics-server", "coredns", "runtimes"]

    public var version: K3sVersion
    /// Of the amd64 `k3s` binary of that release.
    public var sha256: SHA256Digest
    public var disable: [String]
    public var tlsSANs: [HostOrIP]
    public var nodeIP: IPAddress?
    public var clusterCIDR: IPNetwork
    public var serviceCIDR: IPNetwork
    /// Where `VERSION/k3s` is downloaded from.
    public var downloadURL: RepoURL
    /// How long a started or upgraded K3s may take to report Ready before it is rolled back.
    public var readyTimeout: TimeSpan
    /// K3s's datastore does not support going back a minor version; set to force it anyway.
    public var allowMinorDowngrade: Bool

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["version", "sha256", "disable", "tlsSANs", "nodeIP", "clusterCIDR", "serviceCIDR",
                                         "downloadURL", "readyTimeout", "allowMinorDowngrade"])
        version = try r.required("version")
        sha256 = try r.required("sha256")
        disable = try r.optional("disable") ?? []
        tlsSANs = try r.optional("tlsSANs") ?? []
        nodeIP = try r.optional("nodeIP")
        clusterCIDR = try r.optional("clusterCIDR") ?? (try! IPNetwork(parsing: "10.42.0.0/16"))
        serviceCIDR = try r.optional("serviceCIDR") ?? (try! IPNetwork(parsing: "10.43.0.0/16"))
        downloadURL = try r.optional("downloadURL") ?? (try! RepoURL(parsing: "https://github.com/k3s-io/k3s/releases/download"))
        readyTimeout = try r.optional("readyTimeout") ?? TimeSpan(milliseconds: 300_000)
        allowMinorDowngrade = try r.optional("allowMinorDowngrade") ?? false
        try r.finish()
        for (i, component) in disable.enumerated() where !K3sSpec.components.contains(component) {
            let at = (path + "disable").appending(index: i)
            throw context.fail(.invalidValue, EnumHelp.message(component, K3sSpec.components), at: context.mark(for: at), path: at)
        }
    }
}

// MARK: - helm

public struct HelmRelease: Sendable, Equatable, YAMLDecodable {
    /// A chart value read from a file on the node, delivered through a Kubernetes Secret.
    public struct ValueFromFile: Sendable, Equatable, YAMLDecodable {
        /// Dotted path in the chart's values, such as `auth.postgresPassword`.
        public var key: String
        public var file: AbsolutePath

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["key", "file"])
            key = try r.required("key")
            file = try r.required("file")
            try r.finish()
            let segments = key.split(separator: ".", omittingEmptySubsequences: false)
            guard segments.allSatisfy({ !$0.isEmpty }) else {
                throw context.fail(.invalidValue, "\"\(key)\" is not a dotted values path such as auth.postgresPassword",
                                   at: r.node("key")!.mark, path: path + "key")
            }
        }
    }

    public var name: DNSLabel
    public var chart: String
    /// The chart repository; omitted when `chart` is an `oci://` reference.
    public var repo: RepoURL?
    public var version: String
    public var namespace: DNSLabel
    public var createNamespace: Bool
    public var values: JSONValue
    public var valuesSecrets: [ValueFromFile]
    /// Releases that must be Ready before this one is applied (an operator before the chart
    /// that uses its CRDs).
    public var dependsOn: [DNSLabel]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["name", "chart", "repo", "version", "namespace", "createNamespace", "values", "valuesSecrets", "dependsOn"])
        name = try r.required("name")
        chart = try r.required("chart")
        repo = try r.optional("repo")
        version = try r.required("version")
        namespace = try r.required("namespace")
        createNamespace = try r.optional("createNamespace") ?? true
        valuesSecrets = try r.optional("valuesSecrets") ?? []
        dependsOn = try r.optional("dependsOn") ?? []
        values = .object([])
        if let v = r.node("values") {
            guard v.mapping != nil else {
                throw context.fail(.typeMismatch, "expected a mapping of chart values, found \(v.kindDescription)", at: v.mark, path: path + "values")
            }
            if SecretKeys.scan(v, path: path + "values", context: context,
                               remedy: "write it to a file on the node and list it under \"valuesSecrets\" (key: the values path, file: the file)") {
                throw DecodeFailure()
            }
            values = JSONValue(v)
        }
        try r.finish()
        if repo == nil, !chart.hasPrefix("oci://") {
            throw context.fail(.missingField, "missing required field \"repo\" (only an oci:// chart may omit it)", at: node.mark, path: path)
        }
        if let repo, !["https", "http", "oci"].contains(repo.scheme) {
            throw context.fail(.invalidValue, "a chart repository must be https://, http:// or oci://", at: r.node("repo")!.mark, path: path + "repo")
        }
        if version.isEmpty || version.contains(where: { $0 == " " || $0 == "/" }) {
            throw context.fail(.invalidValue, "\"\(version)\" is not a chart version; pin one, such as 7.7.11",
                               at: r.node("version")!.mark, path: path + "version")
        }
    }
}

// MARK: - argocd

public struct ArgoCDSpec: Sendable, Equatable, YAMLDecodable {
    public struct AppOfApps: Sendable, Equatable, YAMLDecodable {
        public var name: DNSLabel
        public var repoURL: RepoURL
        public var path: String
        public var targetRevision: String
        /// Where the child Applications deploy by default.
        public var destinationNamespace: DNSLabel
        /// For a private repository: username plus a password/token file, or an SSH key file.
        public var username: String?
        public var passwordFile: AbsolutePath?
        public var sshPrivateKeyFile: AbsolutePath?
        /// The Argo CD `AppProject` the root Application and its children are confined to.
        public var project: Project
        /// SSH host keys (`known_hosts` lines: `HOST KEYTYPE KEY`) Argo CD trusts besides the
        /// ones its chart ships (GitHub, GitLab, Bitbucket, Azure DevOps): a self-hosted Git
        /// server's. Public keys, not secrets: they belong in Git, where they are reviewed.
        public var knownHosts: [String]

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["name", "repoURL", "path", "targetRevision", "destinationNamespace",
                                             "username", "passwordFile", "sshPrivateKeyFile", "project", "knownHosts"])
            name = try r.optional("name") ?? (try! DNSLabel(parsing: "root"))
            repoURL = try r.required("repoURL")
            self.path = try r.required("path")
            targetRevision = try r.optional("targetRevision") ?? "HEAD"
            destinationNamespace = try r.optional("destinationNamespace") ?? (try! DNSLabel(parsing: "argocd"))
            username = try r.optional("username")
            passwordFile = try r.optional("passwordFile")
            sshPrivateKeyFile = try r.optional("sshPrivateKeyFile")
            project = try r.optional("project") ?? Project()
            knownHosts = try r.optional("knownHosts") ?? []
            try r.finish()
            for (i, line) in knownHosts.enumerated() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                let keyTypes = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                                "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"]
                guard fields.count == 3, keyTypes.contains(String(fields[1])), Data(base64Encoded: String(fields[2])).map({ $0.count > 16 }) == true else {
                    let at = (path + "knownHosts").appending(index: i)
                    throw context.fail(.invalidValue, "\"\(line.prefix(60))\" is not a known_hosts line: HOST KEYTYPE BASE64KEY, as `ssh-keyscan HOST` prints it",
                                       at: context.mark(for: at), path: at)
                }
            }
            if let host = Self.sshHost(repoURL), !Self.chartKnownHosts.contains(host),
               !knownHosts.contains(where: { line in Self.hostsOf(line).contains(host) }) {
                throw context.fail(.invalidValue, "\(repoURL) is an SSH repository on \(host), whose host key Argo CD does not know (its chart ships only "
                                   + "GitHub's, GitLab's, Bitbucket's and Azure DevOps' keys): add its keys under knownHosts (ssh-keyscan \(host))",
                                   at: r.node("repoURL")!.mark, path: path + "repoURL")
            }
            if passwordFile != nil, sshPrivateKeyFile != nil {
                throw context.fail(.conflict, "set either passwordFile or sshPrivateKeyFile, not both", at: node.mark, path: path)
            }
        }
    }

    /// What the App-of-Apps may deploy. Signing protects platform.yaml only: without this,
    /// whoever can push to the apps repository could deploy anything anywhere through a child
    /// Application. The project is named after the root Application.
    public struct Project: Sendable, Equatable, YAMLDecodable {
        /// Repositories children may use besides the root's `repoURL` (always allowed).
        public var sourceRepos: [RepoURL]
        /// Namespaces the root and its children may deploy into (`*`: any).
        public var destinationNamespaces: [String]
        /// Cluster-scoped kinds they may create, as `Kind` (core group) or `group/Kind`.
        public var clusterResources: [String]
        /// GnuPG key IDs: Argo CD syncs only commits signed by one of them.
        public var signatureKeys: [String]
        /// Empty Argo CD's `default` project, so a child naming it cannot escape this one.
        public var restrictDefaultProject: Bool

        public init() {
            sourceRepos = []
            destinationNamespaces = ["*"]
            clusterResources = ["Namespace"]
            signatureKeys = []
            restrictDefaultProject = true
        }

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            self.init()
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["sourceRepos", "destinationNamespaces", "clusterResources", "signatureKeys", "restrictDefaultProject"])
            sourceRepos = try r.optional("sourceRepos") ?? []
            destinationNamespaces = try r.optional("destinationNamespaces") ?? ["*"]
            clusterResources = try r.optional("clusterResources") ?? ["Namespace"]
            signatureKeys = try r.optional("signatureKeys") ?? []
            restrictDefaultProject = try r.optional("restrictDefaultProject") ?? true
            try r.finish()
            for (i, ns) in destinationNamespaces.enumerated() where ns != "*" && (try? DNSLabel(parsing: ns)) == nil {
                let at = (path + "destinationNamespaces").appending(index: i)
                throw context.fail(.invalidValue, "\"\(ns)\" is not a namespace name (or *)", at: context.mark(for: at), path: at)
            }
            for (i, kind) in clusterResources.enumerated() {
                let parts = kind.split(separator: "/", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), let last = parts.last, last.first?.isUppercase == true,
                      kind.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "./-".contains($0)) }) else {
                    let at = (path + "clusterResources").appending(index: i)
                    throw context.fail(.invalidValue, "\"\(kind)\" is not a kind: write Kind (core group) or group/Kind, such as rbac.authorization.k8s.io/ClusterRole",
                                       at: context.mark(for: at), path: at)
                }
            }
            for (i, key) in signatureKeys.enumerated() where !(8...40).contains(key.count) || !key.allSatisfy(\.isHexDigit) {
                let at = (path + "signatureKeys").appending(index: i)
                throw context.fail(.invalidValue, "\"\(key)\" is not a GnuPG key ID (hexadecimal, such as 4AEE18F83AFDEB23)",
                                   at: context.mark(for: at), path: at)
            }
        }
    }

    /// The Helm release that installs Argo CD.
    public var release: DNSLabel
    public var namespace: DNSLabel
    public var appOfApps: AppOfApps?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["release", "namespace", "appOfApps"])
        release = try r.optional("release") ?? (try! DNSLabel(parsing: "argocd"))
        namespace = try r.optional("namespace") ?? (try! DNSLabel(parsing: "argocd"))
        appOfApps = try r.optional("appOfApps")
        try r.finish()
    }
}

// MARK: - alerting

public struct AlertingSpec: Sendable, Equatable, YAMLDecodable {
    public struct Email: Sendable, Equatable, YAMLDecodable {
        public var to: [EmailAddress]
        public var from: EmailAddress
        public var smarthost: HostPort
        public var username: String?
        public var passwordFile: AbsolutePath?
        public var requireTLS: Bool

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["to", "from", "smarthost", "username", "passwordFile", "requireTLS"])
            if let one = r.node("to"), one.scalar != nil {
                to = [try EmailAddress(yaml: one, path: path + "to", context: context)]
            } else {
                to = try r.required("to")
            }
            from = try r.required("from")
            smarthost = try r.required("smarthost")
            username = try r.optional("username")
            passwordFile = try r.optional("passwordFile")
            requireTLS = try r.optional("requireTLS") ?? true
            try r.finish()
            if to.isEmpty {
                throw context.fail(.invalidValue, "at least one recipient is needed", at: r.node("to")!.mark, path: path + "to")
            }
            if username != nil, passwordFile == nil {
                throw context.fail(.missingField, "\"username\" is set, so \"passwordFile\" is needed too", at: node.mark, path: path)
            }
            if passwordFile != nil, username == nil {
                throw context.fail(.missingField, "\"passwordFile\" is set, so \"username\" is needed too (the smarthost login)", at: node.mark, path: path)
            }
        }
    }

    /// The kube-prometheus-stack release whose Alertmanager sends the mail.
    public var release: DNSLabel
    public var email: Email?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["release", "email"])
        release = try r.optional("release") ?? (try! DNSLabel(parsing: "monitoring"))
        email = try r.optional("email")
        try r.finish()
    }
}

// MARK: - backups

public struct BackupsSpec: Sendable, Equatable, YAMLDecodable {
    public var postgres: PostgresBackup?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["postgres"])
        postgres = try r.optional("postgres")
        try r.finish()
    }
}

public struct PostgresBackup: Sendable, Equatable, YAMLDecodable {
    public struct Connection: Sendable, Equatable, YAMLDecodable {
        public enum SSLMode: String, Sendable, CaseIterable, YAMLEnum {
            case disable, allow, prefer, require
            case verifyCA = "verify-ca"
            case verifyFull = "verify-full"
        }

        public var host: HostOrIP
        public var port: Port
        public var user: String
        public var passwordFile: AbsolutePath?
        public var sslmode: SSLMode

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["host", "port", "user", "passwordFile", "sslmode"])
            host = try r.required("host")
            port = try r.optional("port") ?? Port(5432)!
            user = try r.optional("user") ?? "postgres"
            passwordFile = try r.optional("passwordFile")
            sslmode = try r.optional("sslmode") ?? .prefer
            try r.finish()
        }
    }

    public struct Drill: Sendable, Equatable, YAMLDecodable {
        public var schedule: CronSchedule
        public var enabled: Bool

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["schedule", "enabled"])
            schedule = try r.required("schedule")
            enabled = try r.optional("enabled") ?? true
            try r.finish()
        }
    }

    /// The in-cluster PostgreSQL Helm release; its Service and Secret locate the database.
    public var release: DNSLabel?
    /// A database reachable directly, instead of `release`.
    public var connection: Connection?
    public var databases: [SimpleName]
    public var schedule: CronSchedule
    public var keep: Int
    public var directory: AbsolutePath
    public var restoreDrill: Drill?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["release", "connection", "databases", "schedule", "keep", "directory", "restoreDrill"])
        release = try r.optional("release")
        connection = try r.optional("connection")
        databases = try r.required("databases")
        schedule = try r.required("schedule")
        keep = try r.optional("keep") ?? 7
        directory = try r.optional("directory") ?? AbsolutePath("/var/backups/nodeagent/postgres")
        restoreDrill = try r.optional("restoreDrill")
        try r.finish()
        if (release == nil) == (connection == nil) {
            throw context.fail(.conflict, "set exactly one of \"release\" (an in-cluster PostgreSQL) or \"connection\"", at: node.mark, path: path)
        }
        if databases.isEmpty {
            throw context.fail(.invalidValue, "list at least one database", at: r.node("databases")!.mark, path: path + "databases")
        }
        if !(1...1000).contains(keep) {
            throw context.fail(.invalidValue, "keep must be 1-1000 (the newest good dumps to keep)", at: r.node("keep")!.mark, path: path + "keep")
        }
    }
}

// MARK: - status

public struct StatusSpec: Sendable, Equatable, YAMLDecodable {
    /// Address and port of the status/metrics server: a VPN or loopback address, never public.
    public var listen: HostPort
    /// Bearer token for `POST /sync`.
    public var tokenFile: AbsolutePath?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["listen", "tokenFile"])
        listen = try r.required("listen")
        tokenFile = try r.optional("tokenFile")
        try r.finish()
        guard listen.ip != nil else {
            throw context.fail(.invalidValue, "listen must be an IP address and port (the WireGuard address, such as 10.8.0.1:9430)",
                               at: r.node("listen")!.mark, path: path + "listen")
        }
    }
}

extension ArgoCDSpec.AppOfApps {
    /// The hosts whose keys the argo-cd chart ships in `configs.ssh.knownHosts`
    /// (argoproj/argo-helm, charts/argo-cd/values.yaml at argo-cd-7.7.11 and argo-cd-10.1.1).
    static let chartKnownHosts: Set<String> = ["github.com", "ssh.github.com", "gitlab.com", "bitbucket.org", "ssh.dev.azure.com",
                                               "vs-ssh.visualstudio.com"]

    /// The host of an SSH repository URL (`git@host:path`, `ssh://user@host[:port]/path`),
    /// as known_hosts names it (`[host]:port` for another port); nil for other URLs.
    static func sshHost(_ url: RepoURL) -> String? {
        let v = url.value
        if v.hasPrefix("git@"), let colon = v.firstIndex(of: ":") { return String(v[v.index(v.startIndex, offsetBy: 4)..<colon]).lowercased() }
        guard url.scheme == "ssh" else { return nil }
        var authority = String(v.dropFirst("ssh://".count).prefix { $0 != "/" })
        if let at = authority.lastIndex(of: "@") { authority = String(authority[authority.index(after: at)...]) }
        if let colon = authority.lastIndex(of: ":"), !authority.hasPrefix("[") {
            let port = authority[authority.index(after: colon)...]
            let host = authority[..<colon].lowercased()
            return port == "22" ? host : "[\(host)]:\(port)"
        }
        return authority.lowercased()
    }

    /// The host names of a known_hosts line (its first field, comma-separated).
    static func hostsOf(_ line: String) -> [String] {
        (line.split(separator: " ").first ?? "").split(separator: ",").map { $0.lowercased() }
    }
}

extension Platform {
    /// The Helm releases as nodeagent installs them: the Argo CD release also gets the
    /// App-of-Apps' `knownHosts` as the argo-cd chart's `configs.ssh.extraHosts` (appended to the
    /// chart's own `knownHosts` in `argocd-ssh-known-hosts-cm`), after any the values set.
    public var effectiveHelmReleases: [HelmRelease]? {
        guard var releases = spec.helmReleases else { return nil }
        guard let argo = spec.argocd, let hosts = argo.appOfApps?.knownHosts, !hosts.isEmpty,
              let i = releases.firstIndex(where: { $0.name == argo.release }) else { return releases }
        let path = ["configs", "ssh", "extraHosts"]
        let earlier = releases[i].values[path]?.string.map { $0.hasSuffix("\n") ? $0 : $0 + "\n" } ?? ""
        releases[i].values[path] = .string(earlier + hosts.joined(separator: "\n") + "\n")
        return releases
    }
}
