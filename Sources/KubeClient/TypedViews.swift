#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
public import YAML

/// The few typed reads reconcilers need from untyped objects.
public enum KubeViews {
    /// A Node's `Ready` condition: `True`, `False`, `Unknown`, or nil when it has none.
    public static func nodeReady(_ node: JSONValue) -> String? {
        node["status"]?["conditions"]?.array?.first { $0["type"]?.string == "Ready" }?["status"]?.string
    }

    public enum JobState: String, Sendable {
        case running, succeeded, failed
    }

    /// A Job's state from its conditions (`Complete`/`Failed` with status `True`).
    public static func jobState(_ job: JSONValue) -> JobState {
        let conditions = job["status"]?["conditions"]?.array ?? []
        func has(_ type: String) -> Bool { conditions.contains { $0["type"]?.string == type && $0["status"]?.string == "True" } }
        if has("Failed") { return .failed }
        if has("Complete") { return .succeeded }
        return .running
    }

    /// A Secret's `data`, base64-decoded. Never print the result.
    public static func secretData(_ secret: JSONValue) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for m in secret["data"]?.members ?? [] {
            if let text = m.value.string, let bytes = Data(base64Encoded: text) { out[m.key] = [UInt8](bytes) }
        }
        return out
    }
}
