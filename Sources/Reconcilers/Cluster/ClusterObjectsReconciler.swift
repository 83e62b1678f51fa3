import KubeClient
import YAML

/// What differs between the cluster sections (Helm releases, alerting, the App-of-Apps): the
/// objects a section renders, what it checks first, and what it reads back to say whether it
/// is done. `ClusterObjectsReconciler` does the rest for all of them — observe what the
/// cluster has, plan the difference (pruning what the section owns and no longer renders),
/// apply it by server-side apply, verify.
protocol ClusterSection: Sendable {
    associatedtype Desired: Sendable & Equatable
    /// What the section reads back besides its objects (release health, the root Application).
    associatedtype Facts: Sendable
    /// What rendering found that the facts need too, read once per observation (whether the
    /// namespace and CRDs exist): the objects and the facts never disagree on it.
    associatedtype Context: Sendable = Void

    static var name: ReconcilerName { get }
    static var dependencies: [ReconcilerName] { get }
    static var proceedsWhileDependenciesProgress: Bool { get }
    var owns: [OwnedResource] { get }
    /// What an API error while observing or applying says it was doing: "the monitoring objects".
    var objectsName: String { get }

    func desired(from platform: Platform) -> Desired?
    /// The objects to apply now (secret values read from their files) and the collections
    /// whose objects this section owns: an owned object there that is not rendered is pruned.
    func objects(_ desired: Desired, host: Host, api: KubeAPI) async throws -> (objects: [KubeObject], collections: [ResourceRef], context: Context)
    /// Marks, on the rendered objects, when their spec last changed (a HelmChart's spec-applied
    /// time), from what the cluster has; nothing by default.
    func mark(_ objects: inout [KubeObject], _ observed: ObjectsObservation, now: Timestamp)
    func facts(_ desired: Desired, context: Context, objects: [KubeObject], observed: ObjectsObservation, api: KubeAPI) async throws -> Facts
    /// The plan, adjusted by what the facts say (a release held for its `dependsOn`); as is by default.
    func adjust(_ changes: [Change], _ desired: Desired, _ facts: Facts) -> [Change]
    func condition(_ desired: Desired, _ facts: Facts) -> Condition
}

extension ClusterSection {
    static var proceedsWhileDependenciesProgress: Bool { false }
    func mark(_ objects: inout [KubeObject], _ observed: ObjectsObservation, now: Timestamp) {}
    func adjust(_ changes: [Change], _ desired: Desired, _ facts: Facts) -> [Change] { changes }
}

/// One generic reconciler for every set of objects nodeagent keeps in the cluster.
struct ClusterObjectsReconciler<Section: ClusterSection>: Reconciler {
    typealias Desired = Section.Desired

    struct Observed: Sendable {
        /// The objects to apply, secret values included (read from their files).
        var objects: [KubeObject]
        var cluster: ObjectsObservation
        var facts: Section.Facts
    }

    static var name: ReconcilerName { Section.name }
    static var dependencies: [ReconcilerName] { Section.dependencies }
    static var proceedsWhileDependenciesProgress: Bool { Section.proceedsWhileDependenciesProgress }
    var owns: [OwnedResource] { section.owns }

    let section: Section
    let host: Host
    let cluster: ClusterAccess

    init(_ section: Section, host: Host, cluster: ClusterAccess) {
        self.section = section
        self.host = host
        self.cluster = cluster
    }

    func desired(from platform: Platform) -> Desired? { section.desired(from: platform) }

    func observe(_ desired: Desired) async throws -> Observed {
        let api = try cluster.api()
        return try await Self.wrapping("reading \(section.objectsName)") {
            var (objects, collections, context) = try await section.objects(desired, host: host, api: api)
            let observed = try await ObjectSync.observe(objects, api: api, owner: Self.name, collections: collections)
            section.mark(&objects, observed, now: host.clock.now())
            let facts = try await section.facts(desired, context: context, objects: objects, observed: observed, api: api)
            return Observed(objects: objects, cluster: observed, facts: facts)
        }
    }

    func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        section.adjust(ObjectSync.plan(observed.objects, observed.cluster), desired, observed.facts)
    }

    func apply(_ changes: [Change], desired: Desired) async throws {
        let api = try cluster.api()
        try await Self.wrapping("applying \(section.objectsName)") { try await ObjectSync.apply(changes, api: api) }
    }

    func verify(_ desired: Desired) async throws -> Condition {
        converged(desired, try await observe(desired))
    }

    func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        section.condition(desired, observed.facts)
    }

    /// An API server's refusal or absence as a reconcile error that says what was being done;
    /// nodeagent's own errors (a missing secret file, a refused field) pass unchanged.
    static func wrapping<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ReconcileError {
            throw error
        } catch let error as FileSystemError {
            throw error
        } catch {
            throw ReconcileError.kube(error, doing: what)
        }
    }
}
