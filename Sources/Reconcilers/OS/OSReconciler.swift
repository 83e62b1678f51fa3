/// The OS baseline: sysctl settings, the SSH user's `authorized_keys`, and an sshd drop-in.
///
/// Order matters for lockout safety: keys are in place before the sshd drop-in turns password
/// logins off. The drop-in is validated with `sshd -t` against the full configuration it would
/// join, and never written if sshd refuses it; sshd is then reloaded only if it is running.
public struct OSReconciler: Reconciler {
    public struct Observed: Sendable {
        public var sysctlFile: [UInt8]?
        /// The kernel's current value of each declared key; nil when the key does not exist.
        public var sysctlLive: [String: String?]
        public var sshdDropIn: [UInt8]?
        public var authorizedKeys: [UInt8]?
        public var account: Account?
    }

    /// The SSH user as `/etc/passwd` knows it.
    public struct Account: Sendable, Equatable {
        public var uid: UInt32
        public var gid: UInt32
        public var home: String
    }

    public static let name = ReconcilerName.os
    public static let dependencies: [ReconcilerName] = []
    public static let sysctlPath = "/etc/sysctl.d/90-nodeagent.conf"
    public static let sshdDropInPath = "/etc/ssh/sshd_config.d/10-nodeagent.conf"
    public static let sshdConfigPath = "/etc/ssh/sshd_config"

    public var owns: [OwnedResource] {
        [.file(Self.sysctlPath), .file(Self.sshdDropInPath), .file("authorized_keys of the SSH user")]
    }

    let host: Host
    /// Where /proc/sys is read: always the running kernel, whatever the file root.
    let kernel: any FileSystem

    public init(host: Host, kernel: (any FileSystem)? = nil) {
        self.host = host
        self.kernel = kernel ?? host.system
    }

    public func desired(from platform: Platform) -> OSSpec? { platform.spec.os }

    public func observe(_ desired: OSSpec) async throws -> Observed {
        var live: [String: String?] = [:]
        for setting in desired.sysctl {
            live[setting.key] = try kernel.read(Self.procPath(setting.key)).map { Self.normalise(String(decoding: $0, as: UTF8.self)) }
        }
        var account: Account?
        var keys: [UInt8]?
        if let ssh = desired.ssh, !ssh.authorizedKeys.isEmpty {
            account = try lookUp(ssh.user)
            if let account {
                keys = try Self.userFile { () throws(FileSystemError) in
                    try host.files.readInUserDirectory(home: account.home, subdirectory: ".ssh", name: "authorized_keys", limit: Self.authorizedKeysLimit)
                }
            }
        }
        return Observed(sysctlFile: try host.files.read(Self.sysctlPath), sysctlLive: live,
                        sshdDropIn: desired.ssh == nil ? nil : try host.files.read(Self.sshdDropInPath),
                        authorizedKeys: keys, account: account)
    }

    public func plan(_ desired: OSSpec, _ observed: Observed) throws -> [Change] {
        var changes: [Change] = []
        if !desired.sysctl.isEmpty {
            let file = Array(Self.sysctlFile(desired.sysctl).utf8)
            if observed.sysctlFile != file {
                changes.append(Change(observed.sysctlFile == nil ? .create : .update, "file \(Self.sysctlPath)",
                                      operation: .writeFile(path: Self.sysctlPath, before: observed.sysctlFile, after: file, mode: 0o644)))
            }
            for setting in desired.sysctl {
                guard let current = observed.sysctlLive[setting.key] else { continue }
                guard let current else {
                    throw ReconcileError(.stalled, reason: "UnknownSysctl", "sysctl \(setting.key) does not exist in this kernel")
                }
                if current != Self.normalise(setting.value) {
                    changes.append(Change(.update, "sysctl \(setting.key)", detail: "\(current) → \(setting.value)",
                                          operation: .runCommand(["sysctl", "-q", "-w", "\(setting.key)=\(setting.value)"])))
                }
            }
        }
        if let ssh = desired.ssh {
            if !ssh.authorizedKeys.isEmpty {
                guard let account = observed.account else {
                    throw ReconcileError(.stalled, reason: "NoSuchUser", "user \(ssh.user) does not exist on this node")
                }
                let path = account.home + "/.ssh/authorized_keys"
                let content = Array(Self.authorizedKeysFile(ssh.authorizedKeys).utf8)
                if observed.authorizedKeys != content {
                    changes.append(Change(observed.authorizedKeys == nil ? .create : .update, "file \(path)",
                                          operation: .writeFile(path: path, before: observed.authorizedKeys, after: content, mode: 0o600)))
                }
            }
            let dropIn = Array(Self.sshdDropIn(ssh).utf8)
            if observed.sshdDropIn != dropIn {
                changes.append(Change(observed.sshdDropIn == nil ? .create : .update, "file \(Self.sshdDropInPath)",
                                      operation: .writeFile(path: Self.sshdDropInPath, before: observed.sshdDropIn, after: dropIn, mode: 0o644)))
            }
        }
        return changes
    }

    public func apply(_ changes: [Change], desired: OSSpec) async throws {
        // sysctl first, then keys, then sshd: never turn passwords off before keys exist.
        for change in changes {
            switch change.operation {
            case .writeFile(Self.sysctlPath, _, let after, let mode):
                try host.files.write(Self.sysctlPath, after, mode: mode)
            case .runCommand(let argv):
                try await host.commands.check(Command(argv[0], Array(argv.dropFirst())))
            default:
                continue
            }
        }
        if let ssh = desired.ssh {
            for change in changes {
                if case .writeFile(let path, _, let after, let mode) = change.operation, path.hasSuffix("/.ssh/authorized_keys"),
                   let account = try lookUp(ssh.user) {
                    // The user owns ~ and may swap ~/.ssh for a link at any moment: the write goes
                    // through descriptors opened without following links (FileSystem).
                    try Self.userFile { () throws(FileSystemError) in
                        try host.files.writeInUserDirectory(home: account.home, subdirectory: ".ssh", name: "authorized_keys", after, mode: mode,
                                                            directoryMode: 0o700, uid: account.uid, gid: account.gid)
                    }
                }
            }
            if let change = changes.first(where: { if case .writeFile(Self.sshdDropInPath, _, _, _) = $0.operation { return true } else { return false } }),
               case .writeFile(_, _, let after, let mode) = change.operation {
                try await validateSSHD(dropIn: after)
                let before = try host.files.read(Self.sshdDropInPath)
                try host.files.write(Self.sshdDropInPath, after, mode: mode)
                // sshd -t proved it valid; sshd -T proves it is what sshd will use (an earlier
                // drop-in or a main config without the Include would silently win).
                if let problem = try await effectiveMismatch(ssh) {
                    if let before { try host.files.write(Self.sshdDropInPath, before, mode: mode) } else { try host.files.remove(Self.sshdDropInPath) }
                    throw ReconcileError(.stalled, reason: "DropInNotEffective", "\(problem); the previous drop-in was put back")
                }
                try await host.services.reloadIfRunning("ssh.service")
            }
        }
    }

    public func verify(_ desired: OSSpec) async throws -> Condition {
        let remaining = try plan(desired, try await observe(desired))
        if !remaining.isEmpty {
            return Condition(.failed, reason: "NotConverged", message: remaining.map(\.subject).joined(separator: "; "))
        }
        return .ready()
    }

    /// Runs `sshd -t` on the configuration as it would be with the new drop-in, without
    /// touching the real one: a temp main file that includes the candidate first (sshd keeps
    /// the first value of each option) and then the node's own main config.
    private func validateSSHD(dropIn: [UInt8]) async throws {
        guard let main = try host.files.read(Self.sshdConfigPath) else {
            throw ReconcileError(.stalled, reason: "NoSSHDConfig", "\(Self.sshdConfigPath) does not exist: is openssh-server installed?")
        }
        let candidateDir = "/var/lib/nodeagent/os"
        try host.files.makeDirectory(candidateDir, mode: 0o700)
        let candidate = candidateDir + "/sshd-candidate.conf"
        let combined = candidateDir + "/sshd-check.conf"
        try host.files.write(candidate, dropIn, mode: 0o600)
        let rootedMain = SSHDConfig.rootIncludes(String(decoding: main, as: UTF8.self), root: rootPath)
        try host.files.write(combined, Array("Include \(hostPath(candidate))\n\(rootedMain)".utf8), mode: 0o600)
        defer {
            try? host.files.remove(candidate)
            try? host.files.remove(combined)
        }
        let r = try await host.commands.run(Command("sshd", ["-t", "-f", hostPath(combined)]))
        guard r.succeeded else {
            throw ReconcileError(.stalled, reason: "SSHDRejected",
                                 "sshd -t refused the configuration with the new drop-in, so it was not written: \(r.stderr.trimmingNewlines)")
        }
    }

    /// Compares sshd's effective configuration (`sshd -T`) with the declared one.
    /// - Returns: what differs, or nil when sshd will use what was declared.
    private func effectiveMismatch(_ ssh: SSHSpec) async throws -> String? {
        guard let main = try host.files.read(Self.sshdConfigPath) else { return "\(Self.sshdConfigPath) is missing" }
        let check = "/var/lib/nodeagent/os/sshd-effective.conf"
        try host.files.write(check, Array(SSHDConfig.rootIncludes(String(decoding: main, as: UTF8.self), root: rootPath).utf8), mode: 0o600)
        defer { try? host.files.remove(check) }
        let r = try await host.commands.check(Command("sshd", ["-T", "-f", hostPath(check)]))
        var ports: [String] = [], settings: [String: String] = [:]
        for line in r.stdout.split(separator: "\n") {
            let f = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard f.count == 2 else { continue }
            if f[0] == "port" { ports.append(f[1]) } else if settings[f[0]] == nil { settings[f[0]] = f[1] }
        }
        // sshd -T prints prohibit-password by its older name.
        let rootLogin = ssh.permitRootLogin == .prohibitPassword ? "without-password" : ssh.permitRootLogin.rawValue
        var problems: [String] = []
        if !ports.contains(String(ssh.port.value)) { problems.append("port \(ssh.port) (sshd would use \(ports.joined(separator: ", ")))") }
        if settings["passwordauthentication"] != (ssh.passwordAuthentication ? "yes" : "no") {
            problems.append("passwordauthentication (sshd would use \(settings["passwordauthentication"] ?? "?"))")
        }
        if settings["permitrootlogin"] != rootLogin { problems.append("permitrootlogin (sshd would use \(settings["permitrootlogin"] ?? "?"))") }
        return problems.isEmpty ? nil
            : "sshd would not use the drop-in's \(problems.joined(separator: ", ")): \(Self.sshdConfigPath) must include sshd_config.d/*.conf before any other setting of these"
    }

    private var rootPath: String { host.files.root }
    private func hostPath(_ path: String) -> String { host.files.hostPath(path) }

    private func lookUp(_ user: String) throws -> Account? {
        guard let passwd = try host.files.read("/etc/passwd") else {
            return user == "root" ? Account(uid: 0, gid: 0, home: "/root") : nil
        }
        for line in String(decoding: passwd, as: UTF8.self).split(separator: "\n") {
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            if f.count >= 6, f[0] == user, let uid = UInt32(f[2]), let gid = UInt32(f[3]) {
                return Account(uid: uid, gid: gid, home: String(f[5]))
            }
        }
        return nil
    }

    /// authorized_keys is a short list of keys; a bigger file is someone's trick, not a key list.
    static let authorizedKeysLimit = 1 << 20

    /// A file in the SSH user's home refused for what it is (a link, a FIFO, too big) stalls the
    /// reconciler with the reason; nodeagent never writes or reads through it.
    private static func userFile<T>(_ body: () throws(FileSystemError) -> T) throws -> T {
        do {
            return try body()
        } catch {
            guard let problem = error.problem else { throw error }
            let reason = problem == .symbolicLink ? "SymlinkRefused" : "UnsafeUserFile"
            throw ReconcileError(.stalled, reason: reason, "\(error.description); fix it on the node (the SSH user controls this path)")
        }
    }

    static func procPath(_ key: String) -> String {
        "/proc/sys/" + key.replacing(".", with: "/")
    }

    /// The kernel separates the fields of multi-value settings with tabs; compare on words.
    static func normalise(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).joined(separator: " ")
    }

    static func sysctlFile(_ settings: [SysctlSetting]) -> String {
        "# Managed by nodeagent from platform.yaml (spec.os.sysctl): changes made here are overwritten.\n"
            + settings.map { "\($0.key) = \($0.value)\n" }.joined()
    }

    static func authorizedKeysFile(_ keys: [SSHPublicKey]) -> String {
        "# Managed by nodeagent from platform.yaml (spec.os.ssh.authorizedKeys): keys added here are removed.\n"
            + keys.map { $0.line + "\n" }.joined()
    }

    static func sshdDropIn(_ ssh: SSHSpec) -> String {
        var lines = [
            "# Managed by nodeagent from platform.yaml (spec.os.ssh): changes made here are overwritten.",
            "Port \(ssh.port)",
            "PubkeyAuthentication yes",
            "PasswordAuthentication \(ssh.passwordAuthentication ? "yes" : "no")",
        ]
        if !ssh.passwordAuthentication { lines.append("KbdInteractiveAuthentication no") }
        lines.append("PermitRootLogin \(ssh.permitRootLogin.rawValue)")
        return lines.joined(separator: "\n") + "\n"
    }
}

/// sshd configuration text helpers.
enum SSHDConfig {
    /// Places the paths of `Include` lines under `root`, so a check in a test root reads the
    /// root's drop-ins, not the machine's. Relative paths are relative to /etc/ssh, as in sshd.
    static func rootIncludes(_ text: String, root: String) -> String {
        guard root != "/" else { return text }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = words.first, first.lowercased() == "include" else { return String(line) }
            let paths = words.dropFirst().map { p in p.hasPrefix("/") ? root + p : root + "/etc/ssh/" + p }
            return "Include " + paths.joined(separator: " ")
        }.joined(separator: "\n")
    }
}
