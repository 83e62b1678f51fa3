import KubeClient
import YAML

/// Helm releases through K3s's helm-controller: one `HelmChart` in `kube-system` per
/// `spec.helmReleases` entry (plus a Secret for values read from files), applied with
/// server-side apply; releases removed from the desired state are pruned; health comes from
/// the install Job and the release's workloads.
typealias HelmReconciler = ClusterObjectsReconciler<HelmObjects>

extension ClusterObjectsReconciler where Section == HelmObjects {
    init(host: Host, cluster: ClusterAccess) { self.init(HelmObjects(), host: host, cluster: cluster) }
}

struct HelmObjects: ClusterSection {
    struct Desired: Sendable, Equatable {
        var releases: [HelmRelease]
    }

    static let name = ReconcilerName.helm
    static let dependencies: [ReconcilerName] = [.k3s]
    var owns: [OwnedResource] {
        [.kubernetesObject("helmcharts and secrets in kube-system labelled \(KubeObject.ownerLabel)=helm")]
    }
    var objectsName: String { "the HelmCharts" }

    func desired(from platform: Platform) -> Desired? {
        platform.effectiveHelmReleases.map { Desired(releases: $0) }
    }

    static let collections = [ClusterRender.helmChartRef(), ResourceRef(plural: "secrets", namespace: ClusterRender.helmNamespace)]

    func objects(_ desired: Desired, host: Host, api: KubeAPI) async throws -> (objects: [KubeObject], collections: [ResourceRef], context: Void) {
        try await requireServedFields(desired, api: api)
        return (try ClusterRender.helm(desired.releases, secrets: .files(host.files)), Self.collections, ())
    }

    /// Marks when the release's desired state changes (the chart's fields, a field dropped, or
    /// a value from a secret file), so an install Job from before the change is not taken for
    /// the outcome of this one; otherwise the mark stays.
    func mark(_ objects: inout [KubeObject], _ observed: ObjectsObservation, now: Timestamp) {
        let changedValues = Set(objects.filter { $0.isSecret }.compactMap { object -> String? in
            observed.current[object.ref]?["data"] == object.body["data"] ? nil : object.ref.name
        })
        ObjectSync.markChanges(&objects, observed, plural: "helmcharts", now: now, specEquivalent: Self.sameForHelmController) {
            changedValues.contains(ClusterRender.valuesSecretName($0.ref.name ?? ""))
        }
    }

    func facts(_ desired: Desired, context: Void, objects: [KubeObject], observed: ObjectsObservation, api: KubeAPI) async throws -> [ReleaseHealth] {
        try await health(desired, api: api)
    }

    func condition(_ desired: Desired, _ facts: [ReleaseHealth]) -> Condition {
        ReleaseHealth.summary(facts)
    }

    /// Whether a stored HelmChart spec is the desired one as helm-controller sees it: every
    /// field is `omitempty` in its Go struct (a zero value and an absent field are the same),
    /// and v0.17.1's CRD defaults `driver: secret` and `failurePolicy: reinstall`. Only a real
    /// difference gets a new Job, so only a real difference moves the spec-applied mark (a
    /// rendering change, such as no longer sending `createNamespace: false`, does not).
    static func sameForHelmController(_ desired: JSONValue, _ stored: JSONValue) -> Bool {
        func normalised(_ spec: JSONValue, defaultsFrom other: JSONValue?) -> JSONValue {
            guard case .object(let members) = spec else { return spec }
            return .object(members.filter { m in
                switch m.value {
                case .bool(false), .null: return false
                case .string(let s) where s.isEmpty: return false
                case .array(let a) where a.isEmpty: return false
                case .object(let o) where o.isEmpty: return false
                default: break
                }
                if let other, other[m.key] == nil, [("driver", "secret"), ("failurePolicy", "reinstall")].contains(where: { $0.0 == m.key && m.value == .string($0.1) }) {
                    return false
                }
                return true
            })
        }
        let d = normalised(desired, defaultsFrom: nil), s = normalised(stored, defaultsFrom: desired)
        return ObjectSync.matches(d, s) && ObjectSync.matches(s, d)
    }

    /// What the node's HelmChart CRD really has, whatever K3s version the desired state names
    /// (a node installed some other way, a release the version table does not list): a field
    /// it lacks would be dropped, so nothing is applied and the reason says what to do.
    func requireServedFields(_ desired: Desired, api: KubeAPI) async throws {
        guard let release = desired.releases.first(where: { !$0.valuesSecrets.isEmpty }) else { return }
        let crd: JSONValue?
        do {
            crd = try await api.getIfPresent(ResourceRef(group: "apiextensions.k8s.io", version: "v1", plural: "customresourcedefinitions",
                                                         name: "helmcharts.helm.cattle.io"))
        } catch let error as KubeStatusError where error.code == 403 {
            crd = nil   // no right to read CRDs: the apply itself still refuses an unknown field
        } catch {
            throw ReconcileError.kube(error, doing: "reading the HelmChart CRD")
        }
        // Without the CRD (or the right to read it) the Strict apply still refuses the field.
        guard let crd, let version = crd["spec"]?["versions"]?.array?.first(where: { $0["name"]?.string == "v1" }),
              let spec = version["schema"]?["openAPIV3Schema"]?["properties"]?["spec"] else { return }
        if spec["properties"]?["valuesSecrets"] == nil, spec["x-kubernetes-preserve-unknown-fields"] != .bool(true) {
            let server = (try? await api.serverVersion()) ?? "this node's K3s"
            throw ReconcileError(.stalled, reason: "FieldNotServed",
                                 "helmReleases \(release.name) uses valuesSecrets, but the HelmChart CRD served by \(server) has no spec.valuesSecrets "
                                 + "(helm-controller v0.16.7 or later has it): upgrade K3s, or move the value out of valuesSecrets; nothing was applied")
        }
    }

    /// A change of a release whose `dependsOn` are not all Ready is held: shown, never
    /// applied, until what it depends on is Ready.
    func adjust(_ changes: [Change], _ desired: Desired, _ health: [ReleaseHealth]) -> [Change] {
        let blocked = Self.blocked(desired, health: health)
        return changes.map { change in
            guard let release = Self.release(of: change.subject), let waits = blocked[release] else { return change }
            return Change(.run, change.subject, detail: "waits for dependsOn: \(waits)", operation: .hold("dependsOn: \(waits)"))
        }
    }

    /// Releases whose `dependsOn` are not all Ready, with what they wait for.
    static func blocked(_ desired: Desired, health: [ReleaseHealth]) -> [String: String] {
        var status: [String: ReleaseHealth] = [:]
        for (release, h) in zip(desired.releases, health) { status[release.name.value] = h }
        var out: [String: String] = [:]
        for release in desired.releases {
            let waiting = release.dependsOn.filter { status[$0.value]?.status != .ready }
            if !waiting.isEmpty {
                out[release.name.value] = waiting.map { "\($0) (\(status[$0.value]?.reason ?? "unknown"))" }.joined(separator: ", ")
            }
        }
        return out
    }

    /// The release a change is about: `helmchart kube-system/NAME`, `secret kube-system/nodeagent-values-NAME`.
    static func release(of subject: String) -> String? {
        guard let slash = subject.lastIndex(of: "/") else { return nil }
        let name = String(subject[subject.index(after: slash)...])
        if subject.hasPrefix("helmchart ") { return name }
        if subject.hasPrefix("secret "), name.hasPrefix("nodeagent-values-") { return String(name.dropFirst("nodeagent-values-".count)) }
        return nil
    }

    func health(_ desired: Desired, api: KubeAPI) async throws -> [ReleaseHealth] {
        var out: [ReleaseHealth] = []
        do {
            for release in desired.releases { out.append(try await ReleaseHealth.check(release, api: api)) }
            // A release held back by dependsOn says what it waits for.
            for (i, waits) in Self.blocked(desired, health: out).compactMap({ name, waits in
                desired.releases.firstIndex { $0.name.value == name }.map { ($0, waits) }
            }) where out[i].reason == "NotApplied" {
                out[i] = ReleaseHealth(status: .progressing, reason: "WaitingForDependencies",
                                       message: "\(desired.releases[i].name): waits for dependsOn: \(waits)")
            }
        } catch {
            throw ReconcileError.kube(error, doing: "checking the releases' health")
        }
        return out
    }
}
