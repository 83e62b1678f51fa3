extension ReconcilerName {
    public static let heartbeat = ReconcilerName(rawValue: "heartbeat")
}

/// Checks the heartbeat's URL file: the daemon's pinger (`nodeagent run`) does the pinging.
/// Nothing to change on the node; Stalled when the file is missing, exposed or not a URL.
struct HeartbeatReconciler: Reconciler {
    static let name = ReconcilerName.heartbeat
    static let dependencies: [ReconcilerName] = []
    var owns: [OwnedResource] { [] }
    let host: Host

    func desired(from platform: Platform) -> HeartbeatSpec? { platform.spec.section(HeartbeatSpec.self) }

    func observe(_ desired: HeartbeatSpec) async throws -> HeartbeatURL {
        try HeartbeatURL.read(desired.urlFile, files: host.files, what: "spec.heartbeat.urlFile")
    }

    func plan(_ desired: HeartbeatSpec, _ observed: HeartbeatURL) throws -> [Change] { [] }
    func apply(_ changes: [Change], desired: HeartbeatSpec) async throws {}
    func verify(_ desired: HeartbeatSpec) async throws -> Condition { converged(desired, try await observe(desired)) }

    func converged(_ desired: HeartbeatSpec, _ observed: HeartbeatURL) -> Condition {
        .ready("the daemon pings \(observed.shown) at least every \(desired.interval)")
    }
}
