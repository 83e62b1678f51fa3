import YAML

/// Where K3s lives on the node, and the files nodeagent writes for it.
enum K3sFiles {
    static let binary = "/usr/local/bin/k3s"
    static let download = "/usr/local/bin/.k3s.nodeagent-download"
    static let config = "/etc/rancher/k3s/config.yaml"
    static let unitName = "k3s.service"
    static let unit = "/etc/systemd/system/k3s.service"
    static let stateDirectory = "/var/lib/nodeagent/k3s"
    static let record = stateDirectory + "/state.json"
    /// The binary, config and unit as they were before the last change: what a rollback restores.
    static let previous = stateDirectory + "/previous"
    /// K3s's embedded SQLite datastore and server token (docs.k3s.io/datastore/backup-restore:
    /// "take a copy of /var/lib/rancher/k3s/server/db/" and the token, without which the
    /// datastore's encrypted bootstrap data cannot be read); an etcd node has `db/etcd`.
    static let datastore = "/var/lib/rancher/k3s/server/db/state.db"
    static let etcd = "/var/lib/rancher/k3s/server/db/etcd"
    static let token = "/var/lib/rancher/k3s/server/token"
    /// The agent's node password: the datastore holds its hash (the `NODE.node-password.k3s`
    /// Secret), and K3s refuses the node with another one (docs.k3s.io/architecture, "node
    /// password"; the docs site is not versioned: read there for the current lines, v1.31 too).
    static let nodePassword = "/etc/rancher/node/password"

    /// `/etc/rancher/k3s/config.yaml`: K3s reads its flags from it (keys are flag names).
    static func config(_ spec: K3sSpec, nodeName: String) -> [UInt8] {
        var members: [JSONValue.Member] = [
            .init("write-kubeconfig-mode", .string("0600")),
            .init("node-name", .string(nodeName)),
        ]
        if !spec.tlsSANs.isEmpty { members.append(.init("tls-san", .array(spec.tlsSANs.map { .string($0.text) }))) }
        if let ip = spec.nodeIP { members.append(.init("node-ip", .string(ip.description))) }
        members.append(.init("cluster-cidr", .string(spec.clusterCIDR.description)))
        members.append(.init("service-cidr", .string(spec.serviceCIDR.description)))
        if !spec.disable.isEmpty { members.append(.init("disable", .array(spec.disable.map(JSONValue.string)))) }
        return Array(("# Written by nodeagent from spec.k3s; changes made here are overwritten.\n" + JSONValue.object(members).yamlText).utf8)
    }

    /// The unit, after the one K3s's install.sh writes for a server.
    static let unitText = Array("""
        # Written by nodeagent (the k3s reconciler); changes made here are overwritten.
        [Unit]
        Description=Lightweight Kubernetes (K3s, managed by nodeagent)
        Documentation=https://k3s.io
        Wants=network-online.target
        After=network-online.target

        [Install]
        WantedBy=multi-user.target

        [Service]
        Type=notify
        EnvironmentFile=-/etc/default/%N
        KillMode=process
        Delegate=yes
        LimitNOFILE=1048576
        LimitNPROC=infinity
        LimitCORE=infinity
        TasksMax=infinity
        TimeoutStartSec=0
        Restart=always
        RestartSec=5s
        ExecStartPre=-/sbin/modprobe br_netfilter
        ExecStartPre=-/sbin/modprobe overlay
        ExecStart=/usr/local/bin/k3s server

        """.utf8)

    /// `BASE/v1.31.4%2Bk3s1/k3s`, as GitHub serves release assets.
    static func url(_ spec: K3sSpec) -> String {
        let base = spec.downloadURL.value.hasSuffix("/") ? String(spec.downloadURL.value.dropLast()) : spec.downloadURL.value
        return "\(base)/\(spec.version.description.replacingPlus)/k3s"
    }
}

extension String {
    fileprivate var replacingPlus: String { split(separator: "+", omittingEmptySubsequences: false).joined(separator: "%2B") }
}

/// What nodeagent remembers about K3s between passes (`/var/lib/nodeagent/k3s/state.json`).
struct K3sRecord: Sendable, Equatable {
    /// The version nodeagent last saw Ready, and the binary's digest.
    var version: String?
    var sha256: String?
    /// A change that was rolled back: its digest (of version, checksum and files), so the same
    /// desired state is not tried again, and why.
    var failedDigest: String?
    var failedVersion: String?
    var failedReason: String?

    init() {}

    init(_ bytes: [UInt8]?) {
        guard let bytes, let json = JSONValue.parse(bytes) else { return }
        version = json["version"]?.string
        sha256 = json["sha256"]?.string
        failedDigest = json["failed"]?["digest"]?.string
        failedVersion = json["failed"]?["version"]?.string
        failedReason = json["failed"]?["reason"]?.string
    }

    var bytes: [UInt8] {
        var members: [JSONValue.Member] = []
        if let version { members.append(.init("version", .string(version))) }
        if let sha256 { members.append(.init("sha256", .string(sha256))) }
        if let failedDigest {
            members.append(.init("failed", .object(["digest": .string(failedDigest), "version": .string(failedVersion ?? ""),
                                                    "reason": .string(failedReason ?? "")])))
        }
        return Array((JSONValue.object(members).jsonText + "\n").utf8)
    }
}
