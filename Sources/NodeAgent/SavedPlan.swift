import ArgumentParser
import Reconcilers
import YAML

/// A plan saved as JSON (`nodeagent plan -o json`, or `--out FILE`, 0600) and applied with
/// `nodeagent apply --plan FILE`, as Terraform users expect: the plan records what it was made
/// against — the desired-state file and its SHA-256, `--root`, `--kubeconfig`, `--only`, and a
/// fingerprint of each reconciler's changes — and `apply --plan` applies it only while all of
/// that still holds. Otherwise it refuses, says what changed, and changes nothing.
///
/// How "exactly that plan" holds: each reconciler plans again from its observation at apply
/// time and applies only if that plan prints the same as the saved one (`Change.fingerprint`);
/// a reconciler whose plan differs is refused (`PlanStale`) before it touches anything, and
/// blocks its dependents. All of them are checked once before the first is applied, so a stale
/// plan normally changes nothing at all. A plan holds no secret: changes are shown as `plan`
/// shows them (secret values never), and files are named, never read into it.
enum SavedPlan {
    static let format = "nodeagent-plan/v1"

    struct Context {
        var statePath: String
        var stateSHA256: String
        var root: String
        var kubeconfig: String?
        var only: Set<ReconcilerName>?
    }

    struct Loaded {
        var context: Context
        var fingerprints: [ReconcilerName: String]
        /// Reconcilers that failed or were blocked when the plan was made: such a plan does
        /// not say what apply would do for them, so it is not applied (as Terraform refuses to
        /// apply a plan with errors).
        var unplanned: [String]
    }

    static func load(_ path: String) throws -> Loaded {
        let bytes: [UInt8]
        do {
            bytes = try FileReading.read(path)
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ExitCode.failure
        }
        guard let json = JSONValue.parse(bytes), json["format"]?.string == format,
              let statePath = json["state"]?["path"]?.string, let sha = json["state"]?["sha256"]?.string, let root = json["root"]?.string else {
            Terminal.error("\(path): not a saved plan (\(format)): make one with `nodeagent plan -o json --out \(path)`")
            throw ExitCode.failure
        }
        var fingerprints: [ReconcilerName: String] = [:]
        var unplanned: [String] = []
        for r in json["reconcilers"]?.array ?? [] {
            guard let name = r["name"]?.string else { continue }
            if ["failed", "blocked"].contains(r["outcome"]?.string ?? "") {
                unplanned.append("\(name) (\(r["condition"]?["reason"]?.string ?? r["blockedBy"].flatMap { $0.string.map { "blocked by \($0)" } } ?? "failed"))")
            }
            if let fingerprint = r["fingerprint"]?.string { fingerprints[ReconcilerName(rawValue: name)] = fingerprint }
        }
        let only = json["only"]?.array.map { Set($0.compactMap(\.string).map(ReconcilerName.init(rawValue:))) }
        return Loaded(context: Context(statePath: statePath, stateSHA256: sha, root: root, kubeconfig: json["kubeconfig"]?.string, only: only),
                      fingerprints: fingerprints, unplanned: unplanned)
    }

    /// The SHA-256 of the desired-state file as it is now.
    static func digest(_ path: String) throws -> String {
        do {
            return Digest.sha256Hex(try FileReading.read(path))
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ExitCode.failure
        }
    }
}
