#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
public import KubeClient
public import YAML

/// One Kubernetes object a cluster reconciler wants to exist, as it sends it with server-side
/// apply: `apiVersion`, `kind`, `metadata` (name, namespace, labels) and the fields it owns.
public struct KubeObject: Sendable, Equatable {
    public var ref: ResourceRef
    public var body: JSONValue

    public init(ref: ResourceRef, body: JSONValue) {
        self.ref = ref
        self.body = body
    }

    /// A Secret's values are never printed, in a plan, a log or `render`.
    public var isSecret: Bool { ref.group.isEmpty && ref.plural == "secrets" }

    /// As a plan names it: `helmchart kube-system/argocd`.
    public var subject: String {
        let kind = (body["kind"]?.string ?? ref.plural).lowercased()
        return "\(kind) \(ref.namespace.map { "\($0)/" } ?? "")\(ref.name ?? "")"
    }

    /// The labels every object nodeagent manages carries: the managed-by label, and which
    /// reconciler owns it, so each prunes only its own.
    public static func labels(owner: ReconcilerName) -> JSONValue {
        .object([KubeClientIdentity.managedByLabel.key: .string(KubeClientIdentity.managedByLabel.value),
                 ownerLabel: .string(owner.rawValue)])
    }

    public static let ownerLabel = "nodeagent/reconciler"
    /// The annotation holding a digest of the object as nodeagent last applied it, so a
    /// changed desired state is seen even when it only removes a field.
    public static let appliedAnnotation = "nodeagent/applied"

    /// The object with its digest annotation, as `apply` sends it. A Secret's digest leaves
    /// its data out (the values are compared directly, and no digest of a secret is published);
    /// annotations are left out too: some carry the time of a change.
    public var stamped: JSONValue {
        var unstamped = body
        if isSecret { unstamped[["data"]] = nil }
        unstamped[["metadata", "annotations"]] = nil
        var out = body
        out[["metadata", "annotations", Self.appliedAnnotation]] = .string(Digest.sha256Hex(Array(unstamped.jsonText.utf8)).prefix(16).description)
        return out
    }

    static func secret(name: String, namespace: String, owner: ReconcilerName, labels extra: [JSONValue.Member] = [],
                       data: [(key: String, value: [UInt8])]) -> KubeObject {
        var labels = Self.labels(owner: owner)
        for m in extra { labels[[m.key]] = m.value }
        return KubeObject(ref: ResourceRef(plural: "secrets", namespace: namespace, name: name), body: .object([
            "apiVersion": .string("v1"), "kind": .string("Secret"),
            "metadata": .object(["name": .string(name), "namespace": .string(namespace), "labels": labels]),
            "type": .string("Opaque"),
            "data": .object(data.map { JSONValue.Member($0.key, .string(Data($0.value).base64EncodedString())) }),
        ]))
    }

    /// For `render`: the Secret with each value replaced by where it comes from.
    static func redactedSecret(_ object: KubeObject, sources: [(key: String, source: String)]) -> KubeObject {
        var out = object
        out.body[["data"]] = nil
        out.body[["stringData"]] = .object(sources.map { JSONValue.Member($0.key, .string($0.source)) })
        return out
    }
}
