import Reconcilers
import YAML

/// Renders the result of a plan or apply pass for people and for machines.
struct PassReport {
    var result: PassResult
    /// For a plan: what `apply --plan` needs to apply exactly it (see `SavedPlan`).
    var saved: SavedPlan.Context? = nil

    var entries: [Engine.Entry] { result.entries }
    var pendingChanges: Int { result.pendingChanges }
    var hasErrors: Bool { result.hasErrors }

    /// The entries that keep an apply from being done as asked (the engine's verdicts; a
    /// change awaiting the operator is done as asked with --confirm-within).
    var unconverged: [String] {
        entries.compactMap { e in
            switch e.outcome.verdict {
            case .converged, .pending, .awaitingOperator: return nil
            case .notHandled: return "\(e.name) (not handled by this build)"
            default: return "\(e.name) (\(Self.summary(e.outcome)))"
            }
        }
    }

    var converged: Bool { result.doneAsAsked }

    static func summary(_ outcome: Engine.Outcome) -> String {
        switch outcome {
        case .notDeclared: return "not declared: left alone"
        case .notHandled(let section): return "spec.\(section) is declared but this build has no reconciler for it yet"
        case .blocked(let by): return "blocked: \(by) is not ready"
        case .planned(let changes): return changes.isEmpty ? "up to date" : "\(changes.count) change\(changes.count == 1 ? "" : "s")"
        case .applied(let changes, let c):
            return "\(c.status.rawValue): \(c.reason)\(c.message.isEmpty ? "" : ": \(c.message)") (\(changes.count) change\(changes.count == 1 ? "" : "s") applied)"
        case .failed(let c): return "\(c.status.rawValue): \(c.reason): \(c.message)\(c.status == .stalled ? " (needs a person: retrying cannot help)" : "")"
        case .resting(let c): return "resting after \(c.status.rawValue): \(c.reason): \(c.message)"
        }
    }

    static func seconds(_ s: Double) -> String {
        let ms = Int((s * 1000).rounded())
        return ms < 1000 ? "\(ms) ms" : "\(ms / 1000).\(ms % 1000 / 100) s"
    }

    func text(title: String) -> String {
        var out = "\(title)\n"
        for e in entries {
            out += "\n\(e.name): \(Self.summary(e.outcome))\(e.note.map { " (\($0))" } ?? "")\n"
            switch e.outcome {
            case .planned(let changes), .applied(let changes, _):
                for c in changes { out += "  " + c.description.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\n  ") + "\n" }
            default: break
            }
        }
        let unhandled = entries.compactMap { e -> String? in
            if case .notHandled = e.outcome { return e.name.rawValue } else { return nil }
        }
        let applied = entries.reduce(0) { n, e in
            if case .applied(let changes, _) = e.outcome { return n + changes.count }
            return n
        }
        let isApply = entries.contains { if case .applied = $0.outcome { return true } else { return false } }
        out += isApply ? "\n\(applied) change\(applied == 1 ? "" : "s") applied" : "\n\(pendingChanges) change\(pendingChanges == 1 ? "" : "s") pending"
        if !unhandled.isEmpty { out += "; not handled by this build: \(unhandled.joined(separator: ", "))" }
        return out + "\n"
    }

    var json: JSONValue {
        var top: [JSONValue.Member] = []
        if let saved {
            top.append(.init("format", .string(SavedPlan.format)))
            top.append(.init("state", .object(["path": .string(saved.statePath), "sha256": .string(saved.stateSHA256)])))
            top.append(.init("root", .string(saved.root)))
            top.append(.init("kubeconfig", saved.kubeconfig.map(JSONValue.string) ?? .null))
            top.append(.init("only", saved.only.map { .array($0.map { .string($0.rawValue) }.sorted { $0.string! < $1.string! }) } ?? .null))
        }
        return .object(top + [
            .init("pendingChanges", .int(pendingChanges)),
            .init("converged", .bool(converged)),
            .init("verdict", .string(result.verdict.rawValue)),
            .init("reconcilers", .array(entries.map { e in
                var members: [JSONValue.Member] = [.init("name", .string(e.name.rawValue)), .init("seconds", .double(e.seconds)),
                                                   .init("verdict", .string(e.outcome.verdict.rawValue))]
                if let note = e.note { members.append(.init("note", .string(note))) }
                switch e.outcome {
                case .notDeclared: members.append(.init("outcome", .string("notDeclared")))
                case .notHandled(let s):
                    members.append(.init("outcome", .string("notHandled")))
                    members.append(.init("section", .string(s)))
                case .blocked(let by):
                    members.append(.init("outcome", .string("blocked")))
                    members.append(.init("blockedBy", .string(by.rawValue)))
                case .planned(let changes):
                    members.append(.init("outcome", .string("planned")))
                    members.append(.init("changes", .array(changes.map(\.json))))
                    members.append(.init("fingerprint", .string(Change.fingerprint(changes))))
                case .applied(let changes, let c):
                    members.append(.init("outcome", .string("applied")))
                    members.append(.init("changes", .array(changes.map(\.json))))
                    members.append(.init("condition", c.json))
                case .failed(let c):
                    members.append(.init("outcome", .string("failed")))
                    members.append(.init("condition", c.json))
                case .resting(let c):
                    members.append(.init("outcome", .string("resting")))
                    members.append(.init("condition", c.json))
                }
                return .object(members)
            })),
        ])
    }
}

extension Change {
    var json: JSONValue {
        .object(["action": .string(action.rawValue), "subject": .string(subject), "detail": detail.map(JSONValue.string) ?? .null])
    }
}

extension Condition {
    var json: JSONValue {
        .object(["status": .string(status.rawValue), "reason": .string(reason), "message": .string(message)])
    }
}
