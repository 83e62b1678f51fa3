/// Starts, stops and enables the node's services (K3s, WireGuard's `wg-quick@`, nodeagent).
public protocol ServiceManager: Sendable {
    func isEnabled(_ unit: String) async throws -> Bool
    func enable(_ unit: String) async throws
    func disable(_ unit: String) async throws
    func isActive(_ unit: String) async throws -> Bool
    func start(_ unit: String) async throws
    func restart(_ unit: String) async throws
    func reload(_ unit: String) async throws
    func stop(_ unit: String) async throws
    /// Re-reads unit files after nodeagent wrote one.
    func reloadDaemon() async throws
    /// Reloads (or restarts) the unit if it is running; does nothing if it is not, or offline.
    func reloadIfRunning(_ unit: String) async throws
}

public struct ServiceError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// systemd through `systemctl`. With a `root` other than "/", it works on that directory
/// offline (`systemctl --root`): enabling and disabling units work, while verbs that need a
/// running systemd (start, restart, is-active…) throw, as there is none to ask.
public struct SystemdServiceManager: ServiceManager {
    public let commands: any CommandRunner
    public let root: String

    public init(commands: any CommandRunner = SystemCommandRunner(), root: String = "/") {
        self.commands = commands
        self.root = root
    }

    private var offline: Bool { root != "/" }

    private func systemctl(_ arguments: [String]) -> Command {
        Command("systemctl", (offline ? ["--root=\(root)"] : []) + ["--no-ask-password", "--quiet"] + arguments, timeout: .seconds(120))
    }

    private func requireRunningSystemd(_ verb: String, _ unit: String) throws {
        if offline {
            throw ServiceError(description: "cannot \(verb) \(unit): \(root) is an offline root with no running systemd")
        }
    }

    public func isEnabled(_ unit: String) async throws -> Bool {
        // is-enabled exits 0 for enabled (and static, alias…), 1 for disabled, and prints why.
        let r = try await commands.run(systemctl(["is-enabled", unit]))
        if r.exitCode == 0 { return true }
        // A unit that does not exist (yet) is not enabled: systemd 252 says "No such file or
        // directory" and exits 1 for it, and nodeagent asks before it writes the unit.
        return false
    }

    public func enable(_ unit: String) async throws { try await commands.check(systemctl(["enable", unit])) }
    public func disable(_ unit: String) async throws { try await commands.check(systemctl(["disable", unit])) }

    public func isActive(_ unit: String) async throws -> Bool {
        try requireRunningSystemd("query", unit)
        return try await commands.run(systemctl(["is-active", unit])).exitCode == 0
    }

    public func start(_ unit: String) async throws { try await runtime("start", unit) }
    public func restart(_ unit: String) async throws { try await runtime("restart", unit) }
    public func reload(_ unit: String) async throws { try await runtime("reload", unit) }
    public func stop(_ unit: String) async throws { try await runtime("stop", unit) }

    /// A verb that needs a running systemd.
    private func runtime(_ verb: String, _ unit: String) async throws {
        try requireRunningSystemd(verb, unit)
        try await commands.check(systemctl([verb, unit]))
    }

    public func reloadIfRunning(_ unit: String) async throws {
        if offline { return }
        try await commands.check(systemctl(["try-reload-or-restart", unit]))
    }

    public func reloadDaemon() async throws {
        // Offline there is no daemon to reload: the next boot reads the files anyway.
        if offline { return }
        try await commands.check(systemctl(["daemon-reload"]))
    }
}
