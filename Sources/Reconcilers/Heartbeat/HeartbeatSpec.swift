public import YAML

/// `spec.heartbeat`: a dead-man's switch. The daemon pings a URL at least every `interval`
/// while it runs (healthchecks.io, Dead Man's Snitch, an Uptime Kuma push monitor); when the
/// node dies or nodeagent hangs, the pings stop and the service off the node alerts.
public struct HeartbeatSpec: SectionSpec {
    public static let key = "heartbeat"
    /// A file on the node holding the ping URL: the URL is a capability, never shown.
    public var urlFile: AbsolutePath
    /// At most this long between two pings (1 s or more; 5 minutes by default).
    public var interval: TimeSpan
    /// Where Alertmanager's always-firing `Watchdog` alert is sent (a webhook), when
    /// `spec.alerting` is declared: a second check that goes quiet when the alerting pipeline
    /// itself is down.
    public var watchdogURLFile: AbsolutePath?

    public static let defaultInterval = TimeSpan(milliseconds: 300_000)

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["urlFile", "interval", "watchdogUrlFile"])
        urlFile = try r.required("urlFile")
        interval = try r.optional("interval") ?? Self.defaultInterval
        watchdogURLFile = try r.optional("watchdogUrlFile")
        try r.finish()
        guard interval >= TimeSpan(milliseconds: 1000) else {
            throw context.fail(.invalidValue, "interval must be 1s or more", at: r.node("interval")!.mark, path: path + "interval")
        }
    }

    public var secretFiles: [(key: String, file: AbsolutePath)] {
        [("urlFile", urlFile)] + (watchdogURLFile.map { [("watchdogUrlFile", $0)] } ?? [])
    }
}

/// A ping URL read from its file: https://, or http:// to the node itself (a local relay).
public struct HeartbeatURL: Sendable, Equatable {
    public let value: String

    /// - Throws: `ReconcileError` (stalled) naming the file, never the URL.
    public init(_ text: String, file: AbsolutePath) throws {
        let blank: Set<Character> = [" ", "\t", "\n", "\r"]
        let url = String(text.drop { blank.contains($0) }.reversed().drop { blank.contains($0) }.reversed())
        let lower = url.lowercased()
        guard lower.hasPrefix("https://") || (lower.hasPrefix("http://") && RepoURL.isLoopbackURL(url)),
              !url.contains(where: { $0.isWhitespace || $0 == "\"" || $0 == "\\" || $0.asciiValue.map { $0 < 0x20 } ?? false }) else {
            throw ReconcileError(.stalled, reason: "HeartbeatURLInvalid",
                                 "\(file) does not hold one https:// URL (http:// only to the node itself): the ping URL a service such as healthchecks.io gives")
        }
        // The failure signal is the URL + "/fail" (healthchecks.io's convention): a query or a
        // fragment would swallow it.
        guard !url.contains("?"), !url.contains("#") else {
            throw ReconcileError(.stalled, reason: "HeartbeatURLInvalid",
                                 "\(file): a ping URL with a query or fragment is not supported (the failure signal appends /fail to it)")
        }
        value = url
    }

    /// The ping URL from its file (a secret file: regular, root's, 0600), checked.
    public static func read(_ file: AbsolutePath, files: any FileSystem, what: String) throws -> HeartbeatURL {
        guard let text = try SecretSource.files(files).read(file, for: what) else {
            throw ReconcileError(.stalled, reason: "SecretFileMissing", "\(file) (\(what)) does not exist")
        }
        return try HeartbeatURL(text, file: file)
    }

    /// The scheme and host only: what may be shown.
    public var shown: String {
        guard let rest = value.split(separator: "://", maxSplits: 1).dropFirst().first else { return "?" }
        var host = String(rest.prefix { !"/?#".contains($0) })
        if let at = host.lastIndex(of: "@") { host = String(host[host.index(after: at)...]) }
        return "\(value.prefix { $0 != ":" })://\(host)/…"
    }
}
