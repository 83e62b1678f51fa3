import KubeClient
import YAML

/// K3s at a pinned, checksummed version: the binary (downloaded, verified before it is ever
/// executable, installed by rename), `/etc/rancher/k3s/config.yaml`, the `k3s.service` unit,
/// started through the service seam and waited for until the API answers `/readyz` and the
/// node is Ready at the desired version.
///
/// A change (upgrade, config) keeps a snapshot of the binary, config and unit before it; if
/// K3s is not Ready at the new state within `readyTimeout`, the snapshot is put back and K3s
/// restarted, the reconciler reports `Failed` with the reason, and it does not try that same
/// desired state again until `spec.k3s` changes. A minor-version downgrade is refused (K3s's
/// datastore does not support it) unless `allowMinorDowngrade` is set.
public struct K3sReconciler: Reconciler {
    public struct Desired: Sendable, Equatable {
        public var spec: K3sSpec
        /// The node's name in Kubernetes: the platform's `metadata.name`.
        public var nodeName: String
        /// With `beforeK3sUpgrade`, the provider snapshot an upgrade waits for.
        public var providerSnapshot: ProviderSnapshotSpec? = nil

        var config: [UInt8] { K3sFiles.config(spec, nodeName: nodeName) }
        /// Identifies this desired state of K3s (every field of `spec.k3s`), for "do not retry
        /// what was rolled back".
        var digest: String {
            let settings = "\(spec.version) \(spec.sha256.hex) \(spec.downloadURL.value) \(spec.readyTimeout.milliseconds) \(spec.allowMinorDowngrade)\n"
            return Digest.sha256Hex(Array(settings.utf8) + config + K3sFiles.unitText)
        }
    }

    public struct Observed: Sendable {
        var binarySHA256: String?
        /// The version the installed binary reports (from the record, or `k3s --version`).
        var installedVersion: K3sVersion?
        var config: [UInt8]?
        var unit: [UInt8]?
        var record: K3sRecord
        var enabled: Bool
        var active: Bool
        /// nil when Ready; else why not.
        var notReady: String?
        /// The kubelet version the Node reports, when the API answers.
        var nodeVersion: String?
    }

    public struct Options: Sendable {
        /// How often readiness is checked while waiting.
        public var pollInterval: Duration
        /// Progress lines (downloads, restarts, rollbacks).
        public var log: @Sendable (String) -> Void

        public init(pollInterval: Duration = .seconds(2), log: @escaping @Sendable (String) -> Void = { _ in }) {
            self.pollInterval = pollInterval
            self.log = log
        }
    }

    public static let name = ReconcilerName.k3s
    /// The firewall first: the API must never be reachable before it is filtered.
    public static let dependencies: [ReconcilerName] = [.firewall, .wireguard]
    public var owns: [OwnedResource] {
        [.file(K3sFiles.binary), .file(K3sFiles.config), .systemdUnit(K3sFiles.unitName), .file(K3sFiles.record)]
    }

    let host: Host
    let cluster: ClusterAccess
    let options: Options

    public init(host: Host, cluster: ClusterAccess, options: Options = Options()) {
        self.host = host
        self.cluster = cluster
        self.options = options
    }

    public func desired(from platform: Platform) -> Desired? {
        platform.spec.k3s.map { Desired(spec: $0, nodeName: platform.name.value,
                                        providerSnapshot: platform.spec.backups?.providerSnapshot.flatMap { $0.beforeK3sUpgrade ? $0 : nil }) }
    }

    func hostPath(_ path: String) -> String { host.files.hostPath(path) }

    public func observe(_ desired: Desired) async throws -> Observed {
        let record = K3sRecord(try host.files.read(K3sFiles.record))
        let sha = try host.files.sha256(K3sFiles.binary)
        let active = try await host.services.isActive(K3sFiles.unitName)
        let readiness = active ? await notReady(node: desired.nodeName, version: desired.spec.version.description)
                               : (reason: "\(K3sFiles.unitName) is not running", nodeVersion: nil)
        return Observed(binarySHA256: sha, installedVersion: await installedVersion(sha: sha, record: record),
                        config: try host.files.read(K3sFiles.config), unit: try host.files.read(K3sFiles.unit), record: record,
                        enabled: try await host.services.isEnabled(K3sFiles.unitName), active: active,
                        notReady: readiness.reason, nodeVersion: readiness.nodeVersion)
    }

    /// The installed binary's version: from the record when the binary is the one recorded,
    /// else as `k3s --version` prints it ("k3s version v1.31.4+k3s1 (a1b2c3d4)").
    func installedVersion(sha: String?, record: K3sRecord) async -> K3sVersion? {
        guard let sha else { return nil }
        if sha == record.sha256, let v = record.version { return try? K3sVersion(parsing: v) }
        guard let out = try? await host.commands.run(Command(hostPath(K3sFiles.binary), ["--version"], timeout: .seconds(20))),
              out.exitCode == 0 else { return nil }
        return out.stdout.split(separator: " ").compactMap { try? K3sVersion(parsing: String($0)) }.first
    }

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        let wanted = desired.spec.version
        if let installed = observed.installedVersion, observed.binarySHA256 != desired.spec.sha256.hex,
           (wanted.major, wanted.minor) < (installed.major, installed.minor), !desired.spec.allowMinorDowngrade {
            throw ReconcileError(.stalled, reason: "DowngradeRefused",
                                 "K3s \(installed) is installed and \(wanted) is a lower minor version: K3s's datastore cannot go back a minor version. Pin \(installed.major).\(installed.minor) or later, or set spec.k3s.allowMinorDowngrade: true if you restore the datastore yourself")
        }
        var changes: [Change] = []
        // Rolled back before: its files are not tried again until the desired state changes;
        // a K3s that stopped is still started.
        let rolledBack = observed.record.failedDigest == desired.digest
        if !rolledBack {
            if observed.binarySHA256 != desired.spec.sha256.hex {
                let from = observed.binarySHA256 == nil ? nil : (observed.installedVersion?.description ?? "an unknown version")
                changes.append(Change(from == nil ? .create : .update, "k3s binary \(K3sFiles.binary)",
                                      detail: from.map { "\($0) → \(wanted)" } ?? "\(wanted) from \(K3sFiles.url(desired.spec))",
                                      operation: .installBinary(url: K3sFiles.url(desired.spec), sha256: desired.spec.sha256.hex)))
            }
            if observed.config != desired.config {
                changes.append(Change(observed.config == nil ? .create : .update, "file \(K3sFiles.config)",
                                      operation: .writeFile(path: K3sFiles.config, before: observed.config, after: desired.config, mode: 0o644)))
            }
            if observed.unit != K3sFiles.unitText {
                changes.append(Change(observed.unit == nil ? .create : .update, "file \(K3sFiles.unit)",
                                      operation: .writeFile(path: K3sFiles.unit, before: observed.unit, after: K3sFiles.unitText, mode: 0o644)))
            }
            if !observed.enabled {
                changes.append(Change(.run, "unit \(K3sFiles.unitName)", detail: "enable", operation: .enableService(K3sFiles.unitName)))
            }
        }
        // The right binary on disk but another version running: it was never restarted.
        let staleProcess = observed.binarySHA256 == desired.spec.sha256.hex && observed.nodeVersion.map { $0 != wanted.description } == true
        if !changes.filter({ $0.operation != .enableService(K3sFiles.unitName) }).isEmpty || !observed.active || staleProcess {
            let verb = observed.active ? "restart" : "start"
            changes.append(Change(.run, "unit \(K3sFiles.unitName)",
                                  detail: "\(verb), then wait up to \(desired.spec.readyTimeout) for the node to be Ready"
                                      + (rolledBack ? "" : " (else roll back)"),
                                  operation: .restartService(K3sFiles.unitName)))
        }
        return changes
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        let operations = changes.map(\.operation)
        var record = K3sRecord(try host.files.read(K3sFiles.record))
        // Exactly what the plan says: the URL and checksum it showed, the config it diffed.
        let install = operations.lazy.compactMap { op -> (url: String, sha256: String)? in
            if case .installBinary(let url, let sha) = op { return (url, sha) } else { return nil }
        }.first
        let newBinary = install != nil
        let changesFiles = newBinary || operations.contains { if case .writeFile = $0 { return true } else { return false } }
        // After a rollback only a start is ever planned, and what runs is the old version.
        let rolledBack = record.failedDigest == desired.digest
        // 1. The new binary, verified, before anything on the node changes.
        if newBinary {
            try await K3sBinary.fetch(install!.url, to: K3sFiles.download, files: host.files, expect: install!.sha256, log: options.log)
        }
        let currentSHA = try host.files.sha256(K3sFiles.binary)
        // 1b. An upgrade of a running K3s with beforeK3sUpgrade: the whole VPS is snapshotted at
        // the provider first, and the upgrade goes ahead only once that snapshot is done.
        if newBinary, currentSHA != nil, let snapshot = desired.providerSnapshot {
            options.log("taking a provider snapshot of \(snapshot.serviceName) before the upgrade")
            let record = await snapshot.takeSnapshot(host: host, node: desired.nodeName, progress: options.log)
            guard record.ok else {
                try? host.files.remove(K3sFiles.download)
                throw ReconcileError(.failed, reason: "ProviderSnapshotFailed",
                                     "K3s was not upgraded: the provider snapshot before it failed (\(record.reason): \(record.message)); the running K3s is untouched")
            }
            options.log("\(record.message) taken: upgrading")
        }
        // 2. A snapshot of what runs now, for the rollback.
        let canRollBack = currentSHA != nil && changesFiles
        if canRollBack { try snapshot(version: await installedVersion(sha: currentSHA, record: record)) }
        // 3. The change, then 4. Ready in time — any failure on the way counts as not Ready.
        var why: String?
        do {
            if newBinary { try host.files.move(K3sFiles.download, to: K3sFiles.binary, mode: 0o755) }
            try host.files.makeDirectory("/etc/rancher/k3s", mode: 0o755)
            let config = operations.lazy.compactMap { op -> [UInt8]? in
                if case .writeFile(K3sFiles.config, _, let after, _) = op { return after } else { return nil }
            }.first ?? desired.config
            try host.files.writeIfChanged(K3sFiles.config, config, mode: 0o644)
            try host.files.writeIfChanged(K3sFiles.unit, K3sFiles.unitText, mode: 0o644)
            try await host.services.reloadDaemon()
            if operations.contains(.enableService(K3sFiles.unitName)) { try await host.services.enable(K3sFiles.unitName) }
            // Only the planned restart: a plan that only enables the unit leaves K3s running.
            guard operations.contains(.restartService(K3sFiles.unitName)) else { return }
            options.log("restarting \(K3sFiles.unitName) (K3s \(desired.spec.version))")
            let restarted = host.clock.now()
            try await host.services.restart(K3sFiles.unitName)
            why = await waitUntilReady(node: desired.nodeName, version: rolledBack ? nil : desired.spec.version.description,
                                       since: restarted, timeout: desired.spec.readyTimeout)
        } catch {
            why = "\(error)"
        }
        if let why {
            guard canRollBack else {
                throw ReconcileError(.failed, reason: "NotReady",
                                     "K3s \(rolledBack ? "" : "\(desired.spec.version) ")did not become Ready within \(desired.spec.readyTimeout): \(why)")
            }
            options.log("K3s \(desired.spec.version) not Ready within \(desired.spec.readyTimeout) (\(why)): rolling back")
            let back = try await rollBack(desired)
            record.failedDigest = desired.digest
            record.failedVersion = desired.spec.version.description
            record.failedReason = why
            try saveRecord(record)
            throw ReconcileError(.stalled, reason: "UpgradeRolledBack",
                                 "K3s \(desired.spec.version) was not Ready within \(desired.spec.readyTimeout) (\(why)); rolled back to \(back). It is not tried again until spec.k3s changes")
        }
        if !rolledBack, changesFiles || record.version == nil {
            record.version = desired.spec.version.description
            record.sha256 = desired.spec.sha256.hex
            record.failedDigest = nil
            record.failedVersion = nil
            record.failedReason = nil
            try saveRecord(record)
        }
    }

    public func verify(_ desired: Desired) async throws -> Condition {
        let record = K3sRecord(try host.files.read(K3sFiles.record))
        if record.failedDigest == desired.digest {
            let sha = try host.files.sha256(K3sFiles.binary)
            return rolledBackCondition(record, running: await installedVersion(sha: sha, record: record))
        }
        if let why = await notReady(node: desired.nodeName, version: desired.spec.version.description).reason {
            return Condition(.progressing, reason: "NotReady", message: why)
        }
        return .ready("K3s \(desired.spec.version), node \(desired.nodeName) Ready")
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        if observed.record.failedDigest == desired.digest { return rolledBackCondition(observed.record, running: observed.installedVersion) }
        if let why = observed.notReady { return Condition(.progressing, reason: "NotReady", message: why) }
        return .ready("K3s \(desired.spec.version), node \(desired.nodeName) Ready")
    }

    func rolledBackCondition(_ record: K3sRecord, running: K3sVersion?) -> Condition {
        Condition(.stalled, reason: "UpgradeRolledBack",
                  message: "K3s \(record.failedVersion ?? "?") was rolled back (\(record.failedReason ?? "not Ready"))"
                      + (running.map { "; \($0) keeps running" } ?? "") + "; not tried again until spec.k3s changes")
    }

    // MARK: - Steps

    /// Why K3s is not Ready, or nil when it is: the API answers `/readyz`, the node is
    /// registered and Ready, runs `version` (if given), and its kubelet renewed the node's
    /// Lease within the last minute and, if given, after `since` (a restart): a Node object
    /// still saying Ready from before a restart proves nothing.
    /// - Returns: the reason, and the kubelet version the node reports.
    func notReady(node name: String, version: String?, since: Timestamp? = nil) async -> (reason: String?, nodeVersion: String?) {
        let api: KubeAPI
        do {
            api = try cluster.api()
        } catch {
            return ("\(error)", nil)
        }
        guard await api.isReady() else { return ("the API server does not answer /readyz with ok", nil) }
        let node: JSONValue?, lease: JSONValue?
        do {
            node = try await api.getIfPresent(ResourceRef(plural: "nodes", name: name))
            lease = try await api.getIfPresent(ResourceRef(group: "coordination.k8s.io", version: "v1", plural: "leases",
                                                          namespace: "kube-node-lease", name: name))
        } catch {
            return ("cannot read node \(name): \(error)", nil)
        }
        guard let node else { return ("node \(name) is not registered", nil) }
        let running = node["status"]?["nodeInfo"]?["kubeletVersion"]?.string
        guard KubeViews.nodeReady(node) == "True" else { return ("node \(name) is not Ready", running) }
        if let version, running != version { return ("node \(name) runs \(running ?? "an unknown version"), not \(version)", running) }
        guard let renewed = lease?["spec"]?["renewTime"]?.string.flatMap(Timestamp.init(rfc3339:)) else {
            return ("node \(name)'s kubelet has not renewed its lease", running)
        }
        if let since, renewed < since { return ("node \(name)'s kubelet has not checked in since the restart", running) }
        if renewed < host.clock.now().adding(TimeSpan(milliseconds: -60_000)) {
            return ("node \(name)'s kubelet last renewed its lease at \(renewed.rfc3339)", running)
        }
        return (nil, running)
    }

    /// Polls until Ready or the timeout. - Returns: nil when Ready; else the last reason.
    func waitUntilReady(node: String, version: String?, since: Timestamp, timeout: TimeSpan) async -> String? {
        // The host's clock: tests of timing can advance one instead of waiting.
        let clock = host.clock
        let deadline = clock.monotonicNow().adding(timeout)
        let poll = TimeSpan(milliseconds: Int64(options.pollInterval.components.seconds * 1000
                                                + options.pollInterval.components.attoseconds / 1_000_000_000_000_000))
        var why = await notReady(node: node, version: version, since: since).reason
        while why != nil, clock.monotonicNow() < deadline, !Task.isCancelled {
            try? await clock.sleep(for: TimeSpan(milliseconds: min(poll.milliseconds, deadline.millisecondsSinceEpoch - clock.monotonicNow().millisecondsSinceEpoch)))
            why = await notReady(node: node, version: version, since: since).reason
        }
        return why
    }

    static let snapshotFiles = [(K3sFiles.config, "config.yaml"), (K3sFiles.unit, "k3s.service")]

    /// Copies the binary, config and unit (a missing file is recorded as missing) and the
    /// running version to `previous/`.
    func snapshot(version: K3sVersion?) throws {
        let previous = K3sFiles.previous
        try host.files.makeDirectory(previous, mode: 0o700)
        try host.files.copy(K3sFiles.binary, to: previous + "/k3s", mode: 0o755)
        for (file, name) in Self.snapshotFiles {
            if let bytes = try host.files.read(file) {
                try host.files.write(previous + "/" + name, bytes, mode: 0o644)
            } else {
                try host.files.remove(previous + "/" + name)
            }
        }
        try host.files.write(previous + "/version", Array((version?.description ?? "").utf8), mode: 0o600)
    }

    /// Puts the snapshot back (removing a file the snapshot did not have) and restarts K3s.
    /// - Returns: what now runs, for the message.
    func rollBack(_ desired: Desired) async throws -> String {
        let previous = K3sFiles.previous
        try host.files.copy(previous + "/k3s", to: K3sFiles.binary, mode: 0o755)
        for (file, name) in Self.snapshotFiles {
            if let bytes = try host.files.read(previous + "/" + name) {
                try host.files.write(file, bytes, mode: 0o644)
            } else {
                try host.files.remove(file)
            }
        }
        try await host.services.reloadDaemon()
        let version = (try host.files.read(previous + "/version")).map { String(decoding: $0, as: UTF8.self) }.flatMap { $0.isEmpty ? nil : $0 }
        let restarted = host.clock.now()
        var why: String?
        do {
            try await host.services.restart(K3sFiles.unitName)
            why = await waitUntilReady(node: desired.nodeName, version: version, since: restarted, timeout: desired.spec.readyTimeout)
        } catch {
            why = "\(error)"
        }
        let what = (version ?? "the previous binary") + (why.map { ", which is not Ready either: \($0)" } ?? ", which is Ready again")
        options.log("rolled back to K3s \(what)")
        return what
    }

    func saveRecord(_ record: K3sRecord) throws {
        try host.files.makeDirectory(K3sFiles.stateDirectory, mode: 0o700)
        try host.files.write(K3sFiles.record, record.bytes, mode: 0o600)
    }
}
