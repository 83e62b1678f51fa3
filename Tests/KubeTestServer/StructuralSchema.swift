public import YAML

/// A CRD's structural schema as kube-apiserver uses it to prune: what a custom resource keeps
/// of what a client sends. Field names and types here are facts of the upstream CRDs; the
/// test `StructuralSchemaTests` holds them against the upstream files where those exist.
public indirect enum StructuralSchema: Sendable, Equatable {
    /// `type: object` with `properties`: any other field is unknown and pruned.
    case object([String: StructuralSchema])
    /// `type: object` with `additionalProperties`: any key, each value by this schema.
    case map(StructuralSchema)
    case array(StructuralSchema)
    /// `string`, `integer`, `boolean`, `number`, or `int-or-string`.
    case scalar(String)
    /// `x-kubernetes-preserve-unknown-fields: true`: kept as sent.
    case preserve

    static let string = StructuralSchema.scalar("string")
    static let integer = StructuralSchema.scalar("integer")
    static let boolean = StructuralSchema.scalar("boolean")

    /// The value with every unknown field removed, and the path of each removed field in
    /// kube-apiserver's notation (`spec.valuesSecrets`, `spec.list[0].x`).
    public func prune(_ value: JSONValue, at path: String) -> (JSONValue, [String]) {
        switch (self, value) {
        case (.object(let properties), .object(let members)):
            var kept: [JSONValue.Member] = []
            var unknown: [String] = []
            for m in members {
                let at = path.isEmpty ? m.key : "\(path).\(m.key)"
                guard let schema = properties[m.key] else {
                    unknown.append(at)
                    continue
                }
                let (v, u) = schema.prune(m.value, at: at)
                kept.append(.init(m.key, v))
                unknown += u
            }
            return (.object(kept), unknown)
        case (.map(let schema), .object(let members)):
            var unknown: [String] = []
            let kept = members.map { m -> JSONValue.Member in
                let (v, u) = schema.prune(m.value, at: "\(path).\(m.key)")
                unknown += u
                return .init(m.key, v)
            }
            return (.object(kept), unknown)
        case (.array(let schema), .array(let items)):
            var unknown: [String] = []
            let kept = items.enumerated().map { i, item -> JSONValue in
                let (v, u) = schema.prune(item, at: "\(path)[\(i)]")
                unknown += u
                return v
            }
            return (.array(kept), unknown)
        default:
            return (value, [])
        }
    }

    /// The schema as a CRD's `openAPIV3Schema`: what a node's API server returns for the CRD.
    public var openAPIV3: JSONValue {
        switch self {
        case .object(let properties):
            return .object(["type": .string("object"),
                            "properties": .object(properties.keys.sorted().map { JSONValue.Member($0, properties[$0]!.openAPIV3) })])
        case .map(let values): return .object(["type": .string("object"), "additionalProperties": values.openAPIV3])
        case .array(let items): return .object(["type": .string("array"), "items": items.openAPIV3])
        case .scalar("int-or-string"): return .object(["x-kubernetes-int-or-string": .bool(true)])
        case .scalar(let type): return .object(["type": .string(type)])
        case .preserve: return .object(["type": .string("object"), "x-kubernetes-preserve-unknown-fields": .bool(true)])
        }
    }

    /// A CRD version's `openAPIV3Schema` read as kube-apiserver reads it for pruning
    /// (`metadata` is ObjectMeta, never pruned by the CRD's schema).
    public init(openAPIV3Schema s: JSONValue, topLevel: Bool = true) {
        if s["x-kubernetes-preserve-unknown-fields"] == .bool(true) {
            self = .preserve
        } else if s["x-kubernetes-int-or-string"] == .bool(true) {
            self = .scalar("int-or-string")
        } else if let properties = s["properties"]?.members {
            var out: [String: StructuralSchema] = [:]
            for p in properties {
                out[p.key] = topLevel && p.key == "metadata" ? .preserve : StructuralSchema(openAPIV3Schema: p.value, topLevel: false)
            }
            self = .object(out)
        } else if let additional = s["additionalProperties"], additional.members != nil {
            self = .map(StructuralSchema(openAPIV3Schema: additional, topLevel: false))
        } else if s["type"]?.string == "array", let items = s["items"] {
            self = .array(StructuralSchema(openAPIV3Schema: items, topLevel: false))
        } else if s["type"]?.string == "object" {
            self = .object([:])
        } else {
            self = .scalar(s["type"]?.string ?? "any")
        }
    }
}

/// The helm-controller versions K3s bundles that the tests play, with the HelmChart and
/// HelmChartConfig schemas each serves.
///
/// Sources: k3s-io/helm-controller `pkg/apis/helm.cattle.io/v1/types.go` at v0.16.5 (K3s
/// builds the CRDs from these Go structs; no `valuesSecrets`, added in v0.16.7) and
/// `pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml` at v0.17.1 (adds `values`,
/// `valuesSecrets`, `takeOwnership`, `driver`).
public enum HelmControllerVersion: String, Sendable, CaseIterable {
    case v0_16_5 = "v0.16.5"
    case v0_17_1 = "v0.17.1"

    static let seLinuxOptions = StructuralSchema.object(["level": .string, "role": .string, "type": .string, "user": .string])
    static let profile = StructuralSchema.object(["localhostProfile": .string, "type": .string])
    static let windowsOptions = StructuralSchema.object(["gmsaCredentialSpec": .string, "gmsaCredentialSpecName": .string,
                                                         "hostProcess": .boolean, "runAsUserName": .string])
    static let podSecurityContext = StructuralSchema.object([
        "appArmorProfile": profile, "fsGroup": .integer, "fsGroupChangePolicy": .string, "runAsGroup": .integer,
        "runAsNonRoot": .boolean, "runAsUser": .integer, "seLinuxChangePolicy": .string, "seLinuxOptions": seLinuxOptions,
        "seccompProfile": profile, "supplementalGroups": .array(.integer), "supplementalGroupsPolicy": .string,
        "sysctls": .array(.object(["name": .string, "value": .string])), "windowsOptions": windowsOptions,
    ])
    static let securityContext = StructuralSchema.object([
        "allowPrivilegeEscalation": .boolean, "appArmorProfile": profile,
        "capabilities": .object(["add": .array(.string), "drop": .array(.string)]), "privileged": .boolean, "procMount": .string,
        "readOnlyRootFilesystem": .boolean, "runAsGroup": .integer, "runAsNonRoot": .boolean, "runAsUser": .integer,
        "seLinuxOptions": seLinuxOptions, "seccompProfile": profile, "windowsOptions": windowsOptions,
    ])
    static let valuesSecrets = StructuralSchema.array(.object(["ignoreUpdates": .boolean, "keys": .array(.string), "name": .string]))
    static let status = StructuralSchema.object([
        "conditions": .array(.object(["message": .string, "reason": .string, "status": .string, "type": .string])), "jobName": .string,
    ])

    /// `helmcharts.helm.cattle.io` as this version serves it.
    public var helmChart: StructuralSchema {
        var spec: [String: StructuralSchema] = [
            "authPassCredentials": .boolean, "authSecret": .object(["name": .string]), "backOffLimit": .integer, "bootstrap": .boolean,
            "chart": .string, "chartContent": .string, "createNamespace": .boolean, "dockerRegistrySecret": .object(["name": .string]),
            "failurePolicy": .string, "helmVersion": .string, "insecureSkipTLSVerify": .boolean, "jobImage": .string, "plainHTTP": .boolean,
            "podSecurityContext": Self.podSecurityContext, "repo": .string, "repoCA": .string, "repoCAConfigMap": .object(["name": .string]),
            "securityContext": Self.securityContext, "set": .map(.scalar("int-or-string")), "targetNamespace": .string, "timeout": .string,
            "valuesContent": .string, "version": .string,
        ]
        if self == .v0_17_1 {
            spec["driver"] = .string
            spec["takeOwnership"] = .boolean
            spec["values"] = .preserve
            spec["valuesSecrets"] = Self.valuesSecrets
        }
        return .object(["apiVersion": .string, "kind": .string, "metadata": .preserve, "spec": .object(spec), "status": Self.status])
    }

    /// `helmchartconfigs.helm.cattle.io` as this version serves it.
    public var helmChartConfig: StructuralSchema {
        var spec: [String: StructuralSchema] = ["failurePolicy": .string, "valuesContent": .string]
        if self == .v0_17_1 {
            spec["values"] = .preserve
            spec["valuesSecrets"] = Self.valuesSecrets
        }
        return .object(["apiVersion": .string, "kind": .string, "metadata": .preserve, "spec": .object(spec)])
    }
}
