/// A reconciler with its types erased, so the engine can hold several kinds in one list.
public struct AnyReconciler: Sendable {
    public let name: ReconcilerName
    public let dependencies: [ReconcilerName]
    public let owns: [OwnedResource]
    let proceedsWhileDependenciesProgress: Bool
    let isDeclared: @Sendable (Platform) -> Bool
    /// One pass: observe and plan; with `apply`, then apply and verify (or, for an empty
    /// plan, report the converged state without applying or observing again).
    /// `approve` sees the plan before anything is applied, and may refuse it by throwing.
    let pass: @Sendable (Platform, _ apply: Bool, _ settle: Duration, _ clock: any WallClock,
                         _ approve: @Sendable ([Change]) throws -> Void) async throws -> (changes: [Change], condition: Condition?)

    public init<R: Reconciler>(_ reconciler: R) {
        name = R.name
        dependencies = R.dependencies
        owns = reconciler.owns
        proceedsWhileDependenciesProgress = R.proceedsWhileDependenciesProgress
        isDeclared = { reconciler.desired(from: $0) != nil }
        pass = { platform, apply, settle, clock, approve in
            guard let desired = reconciler.desired(from: platform) else { return ([], apply ? .ready() : nil) }
            let observed = try await reconciler.observe(desired)
            let changes = try reconciler.plan(desired, observed)
            if apply { try approve(changes) }
            var condition: Condition
            if changes.isEmpty {
                condition = reconciler.converged(desired, observed)
            } else {
                guard apply else { return (changes, nil) }
                try await reconciler.apply(changes, desired: desired)
                condition = try await reconciler.verify(desired)
            }
            // Asked to wait: look again while the cluster works (a Job, a rollout), up to `settle`;
            // changes held back until something became Ready (a Helm release's dependsOn) are
            // applied once they no longer wait.
            // The engine's clock: tests of settling advance one instead of waiting.
            let deadline = clock.monotonicNow().adding(TimeSpan(milliseconds: Int64(settle.components.seconds * 1000
                                                                                      + settle.components.attoseconds / 1_000_000_000_000_000)))
            var applied = changes.filter { !$0.isHeld }
            var held = Set(changes.filter(\.isHeld).map(\.subject))
            while apply, condition.status == .progressing, clock.monotonicNow() < deadline {
                try await clock.sleep(for: TimeSpan(milliseconds: min(2000, deadline.millisecondsSinceEpoch - clock.monotonicNow().millisecondsSinceEpoch)))
                if !held.isEmpty {
                    // Only what was held and no longer waits; everything else was applied above.
                    let released = try reconciler.plan(desired, try await reconciler.observe(desired))
                        .filter { !$0.isHeld && held.contains($0.subject) }
                    if !released.isEmpty {
                        try await reconciler.apply(released, desired: desired)
                        applied += released
                        held.subtract(released.map(\.subject))
                    }
                }
                condition = try await reconciler.verify(desired)
            }
            return (settle > .zero ? applied + changes.filter { $0.isHeld && held.contains($0.subject) } : changes, condition)
        }
    }
}

/// Runs reconcilers in dependency order: one plan or apply pass over a desired state.
public struct Engine: Sendable {
    public struct SetupError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// What a pass found for one reconciler.
    public enum Outcome: Sendable, Equatable {
        /// Its section is absent from the desired state: nodeagent leaves that concern alone.
        case notDeclared
        /// Its section is declared, but this build has no reconciler for it yet.
        case notHandled(section: String)
        /// A reconciler it depends on failed in this pass.
        case blocked(by: ReconcilerName)
        /// The plan: empty when converged.
        case planned([Change])
        /// After apply and verify.
        case applied([Change], Condition)
        case failed(Condition)
        /// Not run in this pass: it failed before and sits out its backoff (the daemon's); the
        /// condition is the one it failed with.
        case resting(Condition)
    }

    public struct Entry: Sendable, Equatable {
        public var name: ReconcilerName
        public var outcome: Outcome
        public var seconds: Double
        /// What a converged reconciler wants shown, such as the WireGuard public key.
        public var note: String? = nil
    }

    /// In dependency order.
    public let reconcilers: [AnyReconciler]

    /// - Throws: `SetupError` when two reconcilers share a name or an owned resource, or the
    ///   dependencies form a cycle.
    /// What the settle loop (`--wait`) waits with.
    let clock: any WallClock

    public init(_ reconcilers: [AnyReconciler], clock: any WallClock = SystemWallClock()) throws(SetupError) {
        self.clock = clock
        var owners: [OwnedResource: ReconcilerName] = [:]
        var names = Set<ReconcilerName>()
        for r in reconcilers {
            guard names.insert(r.name).inserted else { throw SetupError(description: "two reconcilers are named \(r.name)") }
            for resource in r.owns {
                if let other = owners[resource] {
                    throw SetupError(description: "\(resource) is owned by both \(other) and \(r.name)")
                }
                owners[resource] = r.name
            }
        }
        // Stable topological sort: registration order, except that dependencies come first.
        var sorted: [AnyReconciler] = []
        var placed = Set<ReconcilerName>()
        var remaining = reconcilers
        while !remaining.isEmpty {
            guard let i = remaining.firstIndex(where: { r in r.dependencies.allSatisfy { placed.contains($0) || !names.contains($0) } }) else {
                throw SetupError(description: "reconciler dependencies form a cycle: \(remaining.map(\.name.rawValue).joined(separator: ", "))")
            }
            placed.insert(remaining[i].name)
            sorted.append(remaining.remove(at: i))
        }
        self.reconcilers = sorted
    }

    /// Plans every selected reconciler. Has no side effects.
    /// - Parameters:
    ///   - only: the reconcilers to include; nil for all.
    public func plan(_ platform: Platform, only: Set<ReconcilerName>? = nil) async -> PassResult {
        PassResult(await pass(platform, only: only, apply: false, settle: .zero, progress: { _ in }))
    }

    /// Plans, applies and verifies every selected reconciler, in dependency order. A failed
    /// reconciler blocks its dependents only.
    /// - Parameters:
    ///   - settle: how long to keep verifying a reconciler that reports Progressing (an
    ///     install Job running) before moving on; zero to move on at once.
    ///   - progress: called after each reconciler finishes, for progress output.
    ///   - expected: a saved plan's fingerprint per reconciler (`Change.fingerprint`): a
    ///     reconciler whose plan now differs is not applied (`PlanStale`), nor are its dependents.
    ///   - resting: reconcilers that sit this pass out (the daemon's backoff), with the condition
    ///     they failed with: reported as `.resting`, and their dependents as blocked.
    public func apply(_ platform: Platform, only: Set<ReconcilerName>? = nil, settle: Duration = .zero,
                      expected: [ReconcilerName: String]? = nil, resting: [ReconcilerName: Condition] = [:],
                      progress: @Sendable (Entry) -> Void = { _ in }) async -> PassResult {
        PassResult(await pass(platform, only: only, apply: true, settle: settle, expected: expected, resting: resting, progress: progress))
    }

    private func pass(_ platform: Platform, only: Set<ReconcilerName>?, apply: Bool, settle: Duration,
                      expected: [ReconcilerName: String]? = nil, resting: [ReconcilerName: Condition] = [:],
                      progress: @Sendable (Entry) -> Void) async -> [Entry] {
        var entries: [Entry] = []
        var failed = Set<ReconcilerName>()
        var progressing = Set<ReconcilerName>()
        let registered = Set(reconcilers.map(\.name))
        let declared = platform.declaredSections
        // Registered reconcilers run in dependency order; known ones this build lacks are
        // listed after them, so a plan says what it does not handle instead of pretending.
        let order = reconcilers.map { ($0.name, Optional($0)) }
            + ReconcilerName.all.filter { !registered.contains($0.name) }.map { ($0.name, AnyReconciler?.none) }
        for (name, reconciler) in order {
            if let only, !only.contains(name) { continue }
            let clock = ContinuousClock()
            let start = clock.now
            let outcome: Outcome
            var note: String?
            if let reconciler {
                if !reconciler.isDeclared(platform) {
                    outcome = .notDeclared
                } else if let condition = resting[name] {
                    outcome = .resting(condition)
                } else if let blocker = reconciler.dependencies.first(where: {
                    failed.contains($0) || (progressing.contains($0) && !reconciler.proceedsWhileDependenciesProgress)
                }) {
                    outcome = .blocked(by: blocker)
                } else {
                    (outcome, note) = await run(reconciler, platform, apply: apply, settle: settle, expected: expected.map { $0[name] ?? Change.fingerprint([]) })
                }
            } else {
                let section = ReconcilerName.all.first { $0.name == name }!.section
                guard declared.contains(section) else { continue }
                outcome = .notHandled(section: section)
            }
            switch outcome.verdict {
            // A change held for the operator's confirmation counts as under way.
            case .progressing, .awaitingOperator: progressing.insert(name)
            case .failed, .stalled, .blocked: failed.insert(name)
            case .converged, .notHandled, .pending: break
            }
            let elapsed = clock.now - start
            var entry = Entry(name: name, outcome: outcome,
                              seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            entry.note = note
            progress(entry)
            entries.append(entry)
        }
        return entries
    }

    private func run(_ reconciler: AnyReconciler, _ platform: Platform, apply: Bool, settle: Duration, expected: String?) async -> (Outcome, String?) {
        do {
            let (changes, condition) = try await reconciler.pass(platform, apply, settle, clock) { changes in
                guard let expected, Change.fingerprint(changes) != expected else { return }
                throw ReconcileError(.failed, reason: "PlanStale",
                                     "the node changed since the plan was made: now \(changes.count) change\(changes.count == 1 ? "" : "s") (\(changes.map(\.subject).joined(separator: ", "))); nothing applied: plan again")
            }
            let note = changes.isEmpty && condition?.message.isEmpty == false ? condition?.message : nil
            guard apply, let condition else { return (.planned(changes), note) }
            return (.applied(changes, condition), nil)
        } catch let error as ReconcileError {
            let status: Condition.Status = switch error.kind {
            case .waiting: .progressing
            case .failed: .failed
            case .stalled: .stalled
            }
            return (.failed(Condition(status, reason: error.reason, message: error.message)), nil)
        } catch {
            return (.failed(Condition(.failed, reason: "Error", message: "\(error)")), nil)
        }
    }
}

extension Platform {
    /// The `spec` sections this desired state declares, by their key in `platform.yaml`.
    public var declaredSections: Set<String> {
        Set(Sections.all.filter { $0.isDeclared(spec) }.map(\.key))
    }
}
