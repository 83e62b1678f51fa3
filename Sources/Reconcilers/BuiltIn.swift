/// What a reconciler needs from the node: the seams every side effect goes through.
public struct Host: Sendable {
    public var files: any FileSystem
    public var commands: any CommandRunner

    public init(files: any FileSystem = RootedFileSystem(), commands: any CommandRunner = SystemCommandRunner()) {
        self.files = files
        self.commands = commands
    }
}

/// The reconcilers this build ships, for `plan`, `apply` and the daemon.
public enum BuiltInReconcilers {
    /// None yet: the OS, firewall and WireGuard reconcilers, K3s, Helm, alerting, Argo CD and
    /// backups each arrive with their own change. Until then the engine reports their declared
    /// sections as not handled instead of pretending they converged.
    public static func all(on host: Host) -> [AnyReconciler] {
        []
    }
}
