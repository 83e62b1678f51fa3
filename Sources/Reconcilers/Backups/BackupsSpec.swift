public import YAML
import Foundation

public struct BackupsSpec: Sendable, Equatable, YAMLDecodable {
    public var postgres: PostgresBackup?
    public var providerSnapshot: ProviderSnapshotSpec?
    public var offsite: OffsiteSpec?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["postgres", "providerSnapshot", "offsite"])
        postgres = try r.optional("postgres")
        providerSnapshot = try r.optional("providerSnapshot")
        offsite = try r.optional("offsite")
        try r.finish()
        if postgres?.restoreDrill?.from == .offsite, offsite == nil {
            let at = path + "postgres" + "restoreDrill" + "from"
            throw context.fail(.conflict, "a drill from offsite needs backups.offsite (the repository it restores from)", at: context.mark(for: at), path: at)
        }
        if offsite?.schedule != nil, postgres != nil {
            let at = path + "offsite" + "schedule"
            throw context.fail(.conflict, "offsite.schedule is for a node without backups.postgres: with it, every backup run ends with the off-site copy",
                               at: context.mark(for: at), path: at)
        }
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
        /// Which copy the drill restores: the dumps on the node, or the off-site copy (the one
        /// that survives the node).
        public enum Source: String, Sendable, CaseIterable, YAMLEnum { case local, offsite }

        public var schedule: CronSchedule
        public var enabled: Bool
        public var from: Source

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["schedule", "enabled", "from"])
            schedule = try r.required("schedule")
            enabled = try r.optional("enabled") ?? true
            from = try r.optional("from") ?? .local
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
