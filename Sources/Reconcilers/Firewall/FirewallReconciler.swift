/// Keeps `table inet nodeagent` as `spec.firewall` declares, with lockout protection.
///
/// Every change is "try, then confirm": before loading the new ruleset it saves the current
/// one and arms a revert timer in a separate process (so it fires even if nodeagent dies in the
/// middle), then loads the new table in one `nft -f` transaction, checks it, and only then
/// disarms the timer. With `confirmWithin`, the timer stays armed until `nodeagent confirm`.
/// A change that was rolled back is not retried until the desired state changes.
public struct FirewallReconciler: Reconciler {
    public struct Options: Sendable {
        /// How long a change may go unconfirmed before the previous ruleset returns.
        public var revertAfter: TimeSpan
        /// Keep the revert armed after a successful apply, for the operator to confirm.
        public var confirmWithin: TimeSpan?

        public init(revertAfter: TimeSpan = TimeSpan(milliseconds: 60_000), confirmWithin: TimeSpan? = nil) {
            self.revertAfter = revertAfter
            self.confirmWithin = confirmWithin
        }
    }

    public struct Desired: Sendable, Equatable {
        public var ruleset: NftRuleset
    }

    public struct Observed: Sendable {
        /// `nft -s list table inet nodeagent`, or nil when the table does not exist.
        public var live: String?
        public var applied: FirewallState.Applied?
        /// The ruleset of a change that was rolled back for want of confirmation.
        public var reverted: String?
        /// A change applied with --confirm-within is waiting for `nodeagent confirm`.
        public var awaitingConfirmation: Bool = false
        /// Whether `publicInterface` exists in this network namespace.
        public var publicInterfaceExists: Bool = true
        /// The first public interface that does not exist, when one does not.
        public var missingInterface: String?
    }

    public static let name = ReconcilerName.firewall
    public static let dependencies: [ReconcilerName] = []
    public var owns: [OwnedResource] {
        [.nftablesTable(NftRuleset.table), .file(FirewallState.directory)]
    }

    let host: Host
    let options: Options
    var state: FirewallState { FirewallState(host: host) }

    public init(host: Host, options: Options = Options()) {
        self.host = host
        self.options = options
    }

    public func desired(from platform: Platform) -> Desired? {
        guard let spec = platform.spec.firewall else { return nil }
        let cluster = platform.spec.k3s.map { [$0.clusterCIDR, $0.serviceCIDR] } ?? []
        return Desired(ruleset: NftRuleset(spec, vpnInterface: platform.spec.wireguard?.interface.name, clusterNetworks: cluster,
                                           statusPort: platform.spec.status?.listen.port))
    }

    public func observe(_ desired: Desired) async throws -> Observed {
        // /sys/class/net is the network namespace's own (ip netns exec remounts /sys).
        let missing = desired.ruleset.publicInterfaces.first { (try? host.system.mode("/sys/class/net/\($0)")) == nil }
        return Observed(live: try await Nft.listTable(host.commands), applied: try state.applied(), reverted: try state.reverted(),
                        awaitingConfirmation: try state.isArmed(), publicInterfaceExists: missing == nil, missingInterface: missing)
    }

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        let script = desired.ruleset.table
        if !observed.publicInterfaceExists {
            throw ReconcileError(.stalled, reason: "NoSuchInterface",
                                 "spec.firewall public interface \(observed.missingInterface ?? desired.ruleset.publicInterface) does not exist on this node; a firewall for the wrong interface would lock you out")
        }
        if observed.reverted == FirewallState.operatorMark + script {
            throw ReconcileError(.stalled, reason: "RolledBack",
                                 "this firewall change was rolled back because it was not confirmed in time; it will not be retried until spec.firewall changes (or run `nodeagent confirm --reset`)")
        }
        let subject = "nftables table \(NftRuleset.table)"
        let operation = Change.Operation.loadRuleset(desired.ruleset.table)
        guard let live = observed.live else {
            return [Change(.create, subject, diff: TextDiff.lines(from: [], to: Array(script.utf8)), operation: operation)]
        }
        if observed.awaitingConfirmation, observed.applied?.script != script {
            // Either an operator's change waits for `nodeagent confirm`, or a nodeagent that died
            // mid-change left its revert armed: both end by themselves within the bound.
            throw ReconcileError(.waiting, reason: "AwaitingConfirmation",
                                 "a firewall change waits for `nodeagent confirm` or for its revert; no other change is made until then")
        }
        if let applied = observed.applied, applied.script == script {
            if applied.listing == live { return [] }
            return [Change(.update, subject, detail: "(drift: changed outside nodeagent)",
                           diff: TextDiff.lines(from: Array(live.utf8), to: Array(applied.listing.utf8)), operation: operation)]
        }
        let before = observed.applied?.script ?? live
        return [Change(.update, subject, diff: TextDiff.lines(from: Array(before.utf8), to: Array(script.utf8)), operation: operation)]
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        let commands = host.commands
        // Exactly the ruleset the plan showed.
        guard let table = changes.lazy.compactMap({ if case .loadRuleset(let t) = $0.operation { return t } else { return nil } }).first else { return }
        let transaction = NftRuleset.transaction(for: table)
        // 1. Refuse a ruleset the kernel would refuse, before anything is armed or changed.
        let check = try await commands.run(Nft.command(["-c", "-f", "-"], input: transaction))
        guard check.succeeded else {
            // A refusal is an exit status with a message; a crash says nothing about the ruleset.
            guard check.exitCode != nil else { throw ReconcileError(.failed, reason: "NftFailed", "nft -c -f -: \(check.ending)") }
            throw ReconcileError(.stalled, reason: "InvalidRuleset", "nft refused the ruleset: \(check.stderr)")
        }
        // 2. Save what is there now, and arm its return.
        let previous = try await Nft.listTable(commands)
        try state.saveRollback(NftRuleset.deleteOurTable + (previous ?? ""))
        try state.clearReverted()
        try state.arm(pending: table, after: options.revertAfter, byOperator: options.confirmWithin != nil)
        // 3. Load, check, record.
        do {
            try await commands.check(Nft.command(["-f", "-"], input: transaction))
            FaultInjection.crashIfRequested(at: "firewall-loaded")
            FaultInjection.pauseIfRequested(at: "firewall-loaded")
            guard let live = try await Nft.listTable(commands), live.contains("chain prerouting"), live.contains("chain input") else {
                throw ReconcileError(.failed, reason: "NotLoaded", "the table is not in the kernel after loading it")
            }
            try state.saveApplied(FirewallState.Applied(script: table, listing: live))
        } catch {
            // Roll back now; if even that fails, the armed timer stays to try again.
            if (try? await commands.check(Nft.command(["-f", state.hostPath(FirewallState.rollbackFile)]))) != nil {
                _ = try? state.disarm()
            }
            throw error
        }
        // 4. Confirmed by our own checks, unless the operator is to confirm.
        if options.confirmWithin == nil { try state.disarm() }
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        observed.awaitingConfirmation ? Self.awaitingConfirmation : .ready()
    }

    static let awaitingConfirmation = Condition(.progressing, reason: "AwaitingConfirmation",
                                                message: "run `nodeagent confirm` from a new SSH or VPN session, or the previous ruleset returns")

    public func verify(_ desired: Desired) async throws -> Condition {
        guard let live = try await Nft.listTable(host.commands) else {
            return Condition(.failed, reason: "TableMissing", message: "table \(NftRuleset.table) is not loaded")
        }
        if let applied = try state.applied(), applied.script == desired.ruleset.table, applied.listing == live {
            return try state.isArmed() ? Self.awaitingConfirmation : .ready()
        }
        return Condition(.failed, reason: "Mismatch", message: "the live table differs from the applied one")
    }
}

extension NftRuleset {
    static let deleteOurTable = "table inet nodeagent\ndelete table inet nodeagent\n"
}

/// `nft` invocations.
enum Nft {
    static func command(_ arguments: [String], input: String? = nil) -> Command {
        Command("nft", arguments, input: input.map { Array($0.utf8) }, timeout: .seconds(30))
    }

    /// The stateless listing (no counters) of our table, or nil when it does not exist.
    static func listTable(_ commands: any CommandRunner) async throws -> String? {
        let r = try await commands.run(command(["-s", "list", "table", "inet", "nodeagent"]))
        if r.succeeded {
            // Anything else is not a listing to compare or to roll back to: stop before a change.
            guard r.stdout.hasPrefix("table inet nodeagent {"), r.stdout.hasSuffix("}\n") else {
                throw ReconcileError(.failed, reason: "NftFailed",
                                     "nft list table inet nodeagent printed something that is not the table (\(r.stdout.utf8.count) bytes starting \(String(reflecting: String(r.stdout.prefix(24)))))")
            }
            return r.stdout
        }
        if r.exitCode != nil, r.stderr.contains("No such file or directory") || r.stderr.contains("does not exist") { return nil }
        throw ReconcileError(.failed, reason: "NftFailed", "nft list table inet nodeagent: \(r.ending)\(r.stderr.isEmpty ? "" : ": " + r.stderr)")
    }
}
