public import KubeClient
public import YAML

/// What the cluster holds of one reconciler's objects.
public struct ObjectsObservation: Sendable {
    /// The desired objects that exist, by reference.
    public var current: [ResourceRef: JSONValue] = [:]
    /// Objects carrying this reconciler's owner label that the desired state no longer has.
    public var stale: [ResourceRef] = []
}

/// Server-side apply of a set of objects, shared by the cluster reconcilers: observe what
/// exists, plan the difference (creations, drifted or changed objects, objects to prune), apply.
///
/// An object needs an apply when its digest annotation differs from the desired one (the
/// desired state changed, even if only by dropping a field) or when a field nodeagent sets
/// has another value in the cluster (somebody changed it: drift). Fields the server or other
/// controllers add are not nodeagent's and are left alone.
enum ObjectSync {
    static func observe(_ desired: [KubeObject], api: KubeAPI, owner: ReconcilerName,
                        collections: [ResourceRef]) async throws -> ObjectsObservation {
        var out = ObjectsObservation()
        do {
            for object in desired {
                if let current = try await api.getIfPresent(object.ref) { out.current[object.ref] = current }
            }
            let wanted = Set(desired.map(\.ref))
            let selector = "\(KubeClientIdentity.managedByLabel.key)=\(KubeClientIdentity.managedByLabel.value),\(KubeObject.ownerLabel)=\(owner)"
            for collection in collections {
                for item in try await api.list(collection, labelSelector: selector) {
                    var ref = collection
                    ref.namespace = item["metadata"]?["namespace"]?.string ?? collection.namespace
                    ref.name = item["metadata"]?["name"]?.string
                    if !wanted.contains(ref) { out.stale.append(ref) }
                }
            }
        } catch {
            throw ReconcileError.kube(error, doing: "reading \(owner)'s objects")
        }
        return out
    }

    static func plan(_ desired: [KubeObject], _ observed: ObjectsObservation) -> [Change] {
        var changes: [Change] = []
        for object in desired {
            let stamped = object.stamped
            guard let current = observed.current[object.ref] else {
                let lines = object.isSecret ? ["(a Secret: its values are not shown)"] : stamped.yamlText.split(separator: "\n").map { "+ \($0)" }
                changes.append(Change(.create, object.subject, diff: lines, operation: .applyObject(object.ref, stamped)))
                continue
            }
            var drift = differences(stamped, current, secret: object.isSecret, path: [])
            guard !drift.isEmpty else { continue }
            // nodeagent's own annotations change along with the fields that matter; alone, they
            // mean the desired state dropped a field nodeagent set before.
            let own = drift.filter { $0.hasPrefix("~ metadata.annotations.nodeagent/") }
            drift.removeAll { $0.hasPrefix("~ metadata.annotations.nodeagent/") }
            if drift.isEmpty, !own.isEmpty { drift = ["~ (a field nodeagent set before is no longer in the desired state)"] }
            changes.append(Change(.update, object.subject, diff: drift, operation: .applyObject(object.ref, stamped)))
        }
        for ref in observed.stale {
            changes.append(Change(.delete, KubeObject(ref: ref, body: .null).subject.replacingFirstWord(with: ref.plural),
                                  detail: "(no longer in the desired state)", operation: .deleteObject(ref)))
        }
        return changes
    }

    /// Takes the planned steps, in the plan's order (the desired objects in the desired order,
    /// then the deletes): each object exactly as the plan rendered it.
    static func apply(_ changes: [Change], api: KubeAPI) async throws {
        do {
            for change in changes {
                switch change.operation {
                case .applyObject(let ref, let body): _ = try await api.apply(body, to: ref)
                case .deleteObject(let ref): try await api.delete(ref)
                default: continue
                }
            }
        } catch {
            throw ReconcileError.kube(error, doing: "applying")
        }
    }

    /// Stamps `ReleaseHealth.specAppliedAnnotation` on the objects of kind `plural` whose desired
    /// state changed (their spec, a field dropped, or whatever `alsoChanged` says), with `now`;
    /// an unchanged object keeps its mark. An install Job older than the mark ran for an
    /// earlier desired state.
    ///   - specEquivalent: whether the stored spec is the desired one as the controller sees it;
    ///     without it, the desired fields match and the applied digest is the same.
    static func markChanges(_ objects: inout [KubeObject], _ observed: ObjectsObservation, plural: String, now: Timestamp,
                            specEquivalent: ((_ desired: JSONValue, _ stored: JSONValue) -> Bool)? = nil,
                            alsoChanged: (KubeObject) -> Bool = { _ in false }) {
        let mark = ["metadata", "annotations", ReleaseHealth.specAppliedAnnotation]
        let digest = ["metadata", "annotations", KubeObject.appliedAnnotation]
        for i in objects.indices where objects[i].ref.plural == plural {
            let current = observed.current[objects[i].ref]
            let unchanged = current.map { current in
                let desiredSpec = objects[i].body["spec"] ?? .null
                let sameSpec = specEquivalent.map { equivalent in current["spec"].map { equivalent(desiredSpec, $0) } == true }
                    ?? (current["spec"].map { matches(desiredSpec, $0) } == true && current[digest] == objects[i].stamped[digest])
                return sameSpec && !alsoChanged(objects[i])
            } ?? false
            if unchanged {
                if let kept = current?[mark] { objects[i].body[mark] = kept }
            } else {
                objects[i].body[mark] = .string(now.rfc3339)
            }
        }
    }

    // MARK: -

    /// The fields of `desired` that `current` lacks or holds differently, as plan lines.
    /// Maps are compared key by key (extra keys in the cluster are fine), lists item by item.
    static func differences(_ desired: JSONValue, _ current: JSONValue?, secret: Bool, path: [String]) -> [String] {
        let name = path.joined(separator: ".")
        switch desired {
        case .object(let members) where !members.isEmpty:
            guard case .object = current else { return ["~ \(name): (missing or not a map)"] }
            return members.flatMap { m in differences(m.value, current?[m.key], secret: secret, path: path + [m.key]) }
        default:
            if let current, matches(desired, current) { return [] }
            if secret, path.first == "data" { return ["~ \(name): (secret value differs)"] }
            if case .string(let after) = desired, after.contains("\n") {
                let before = current?.string ?? ""
                return ["~ \(name):"] + TextDiff.lines(from: Array(before.utf8), to: Array(after.utf8)).map { "  \($0)" }
            }
            return ["~ \(name): \(current.map(short) ?? "(absent)") → \(short(desired))"]
        }
    }

    /// Whether the cluster's value satisfies the desired one: equal scalars (2 and 2.0 alike),
    /// maps containing the desired keys, lists of the same length item by item.
    static func matches(_ desired: JSONValue, _ current: JSONValue) -> Bool {
        switch (desired, current) {
        case (.object(let d), .object):
            return d.allSatisfy { m in current[m.key].map { matches(m.value, $0) } ?? false }
        case (.array(let d), .array(let c)):
            return d.count == c.count && zip(d, c).allSatisfy { matches($0, $1) }
        case (.int(let a), .double(let b)), (.double(let b), .int(let a)):
            return Double(a) == b
        default:
            return desired == current
        }
    }

    static func short(_ value: JSONValue) -> String {
        let text = value.jsonText
        return text.count > 120 ? String(text.prefix(117)) + "..." : text
    }
}

extension String {
    fileprivate func replacingFirstWord(with word: String) -> String {
        guard let space = firstIndex(of: " ") else { return word }
        return word + self[space...]
    }
}
