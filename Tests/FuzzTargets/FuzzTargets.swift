import KubeClient
import Reconcilers
import YAML

/// The entry points libFuzzer drives (`scripts/fuzz`), and the regression tests replay.
///
/// Each takes arbitrary bytes and must neither crash nor hang; besides, each checks an invariant
/// that holds for every input and stops the process with a message when it does not, so a
/// broken promise is a finding just like a crash:
/// - a refusal carries at least one diagnostic with a message and a position inside the file;
/// - what is accepted survives the emitters: `jsonText` and `yamlText` read back as the same value;
/// - a cron schedule's next and previous firing agree with each other.
public enum FuzzTargets {
    public static let all: [(name: String, run: @Sendable ([UInt8]) -> Void)] = [
        ("yaml", yaml),
        ("state", state),
        ("agent-config", agentConfig),
        ("kubeconfig", kubeconfig),
        ("cron", cron),
        ("kube-response", kubeResponse),
    ]

    public static func named(_ name: String) -> (@Sendable ([UInt8]) -> Void)? {
        all.first { $0.name == name }?.run
    }

    /// Any YAML stream; every document, as a value, round-trips through both emitters.
    public static func yaml(_ bytes: [UInt8]) {
        let documents: [YAMLNode]
        do {
            documents = try YAMLParser().parseStream(bytes, file: "fuzz.yaml")
        } catch {
            checkRefusal(error, of: bytes, file: "fuzz.yaml")
            return
        }
        for document in documents { checkRoundTrips(JSONValue(document)) }
    }

    /// `platform.yaml`: parse, decode, validate; a valid state's objects render and round-trip.
    public static func state(_ bytes: [UInt8]) {
        let platform: Platform
        do {
            platform = try DesiredStateLoader.load(bytes, file: "platform.yaml")
        } catch {
            checkRefusal(error, of: bytes, file: "platform.yaml")
            return
        }
        // Rendering may refuse (a secret file cannot be read), never crash; what renders round-trips.
        guard let objects = try? ClusterRender.all(platform, secrets: .redacted) else { return }
        for object in objects { checkRoundTrips(object.body) }
    }

    public static func agentConfig(_ bytes: [UInt8]) {
        do {
            _ = try AgentConfig.parse(bytes, file: "agent.yaml")
        } catch {
            checkRefusal(error, of: bytes, file: "agent.yaml")
        }
    }

    public static func kubeconfig(_ bytes: [UInt8]) {
        do {
            _ = try Kubeconfig.parse(bytes, file: "kubeconfig")
        } catch {
            checkRefusal(error, of: bytes, file: "kubeconfig")
        }
    }

    /// A cron expression; for an accepted one, `next` and `previous` around a few instants
    /// (the first bytes pick one) must name the same firings.
    public static func cron(_ bytes: [UInt8]) {
        let text = String(decoding: bytes.prefix(200), as: UTF8.self)
        guard let schedule = try? CronSchedule(parsing: text) else { return }
        var offset: Int64 = 0
        for b in bytes.suffix(4) { offset = offset << 8 | Int64(b) }
        // 2000-01-01 plus up to 136 years, in whole seconds.
        let t = Timestamp(millisecondsSinceEpoch: (946_684_800 + offset) * 1000 + 123)
        guard let next = schedule.next(after: t) else { return }
        expect(next > t && next.millisecondsSinceEpoch % 60_000 == 0, "cron \(text): next(after: \(t)) = \(next)")
        expect(schedule.previous(atOrBefore: next) == next, "cron \(text): previous(atOrBefore: \(next)) is not \(next)")
        let before = Timestamp(millisecondsSinceEpoch: next.millisecondsSinceEpoch - 1)
        if let earlier = schedule.previous(atOrBefore: before) {
            expect(earlier <= t, "cron \(text): \(earlier) fires between \(t) and next(after:) = \(next)")
        }
    }

    /// An API server's body, as a response (JSON or a `metav1.Status`) and as a watch stream.
    public static func kubeResponse(_ bytes: [UInt8]) {
        if let value = JSONValue.parse(bytes) { checkRoundTrips(value) }
        let status = KubeStatusError(status: 500, body: bytes)
        expect(!status.reason.isEmpty, "a Status without a reason")
        for line in bytes.split(separator: 10, omittingEmptySubsequences: false) {
            switch WatchLine(Array(line)) {
            case .event(let event, _):
                switch event {
                case .added(let o), .modified(let o), .deleted(let o): checkRoundTrips(o)
                case .bookmark, .relisted: break
                }
            case .gone, .failed, .ignored: break
            }
        }
    }

    // MARK: - Invariants

    /// A refusal names at least one problem, each with a message, in this file, at a line and
    /// column the file has (one past the last line for "unexpected end").
    static func checkRefusal(_ error: DiagnosticsError, of bytes: [UInt8], file: String) {
        expect(!error.diagnostics.isEmpty, "\(file): refused without a diagnostic")
        let lines = bytes.reduce(1) { $1 == 10 ? $0 + 1 : $0 }
        for d in error.diagnostics {
            expect(!d.message.isEmpty, "\(file): a diagnostic without a message at \(d.mark)")
            expect(d.file == file || d.code == .io, "\(file): a diagnostic names \(d.file)")
            expect(d.mark.line >= 1 && d.mark.line <= lines + 1 && d.mark.column >= 1, "\(file): \(d) is outside the file (\(lines) lines)")
        }
    }

    /// JSON text and YAML text both read back as the value. Objects with a key twice (`1` and
    /// `"1"`) are not JSON objects any more and are left out; doubles compare by bits, with every
    /// NaN alike (JSON has none: they are written as null, checked separately).
    static func checkRoundTrips(_ value: JSONValue) {
        // Aliases can expand a small input to the parser's 500,000-node budget; emitting and
        // re-reading that takes seconds under the sanitizers and finds nothing the small ones
        // would not (found: a mutated billion-laughs file timed out a CI smoke run here).
        guard nodeCount(value, limit: 10_000) < 10_000, hasUniqueKeys(value) else { return }
        let json = value.jsonText
        guard let fromJSON = JSONValue.parse(Array(json.utf8)) else {
            fail("jsonText does not parse: \(json.prefix(400))")
        }
        expect(fromJSON == jsonVisible(value), "jsonText reads back differently: \(json.prefix(400))\nread: \(fromJSON.jsonText.prefix(400))")
        let yaml = value.yamlText
        let fromYAML: JSONValue
        do {
            fromYAML = JSONValue(try YAMLParser().parseDocument(Array(yaml.utf8), file: "emitted.yaml"))
        } catch {
            fail("yamlText does not parse (\(error)):\n\(yaml.prefix(400))")
        }
        expect(sameValue(fromYAML, value), "yamlText reads back differently:\n\(yaml.prefix(400))\nwas:  \(value.jsonText.prefix(400))\nread: \(fromYAML.jsonText.prefix(400))")
    }

    /// Nodes in the value, counting stops at `limit`.
    static func nodeCount(_ value: JSONValue, limit: Int) -> Int {
        var count = 0
        var stack = [value]
        while let next = stack.popLast(), count < limit {
            count += 1
            switch next {
            case .array(let items): stack += items
            case .object(let members): stack += members.map(\.value)
            default: break
            }
        }
        return count
    }

    static func hasUniqueKeys(_ value: JSONValue) -> Bool {
        switch value {
        case .array(let items): return items.allSatisfy(hasUniqueKeys)
        case .object(let members):
            return Set(members.map(\.key)).count == members.count && members.allSatisfy { hasUniqueKeys($0.value) }
        default: return true
        }
    }

    /// The value as JSON can carry it: non-finite doubles become null.
    static func jsonVisible(_ value: JSONValue) -> JSONValue {
        switch value {
        case .double(let d) where !d.isFinite: return .null
        case .array(let items): return .array(items.map(jsonVisible))
        case .object(let members): return .object(members.map { JSONValue.Member($0.key, jsonVisible($0.value)) })
        default: return value
        }
    }

    static func sameValue(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.double(let x), .double(let y)): return x.isNaN ? y.isNaN : x == y
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy(sameValue)
        case (.object(let x), .object(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && sameValue($0.value, $1.value) }
        default: return a == b
        }
    }

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fail(message()) }
    }

    static func fail(_ message: String) -> Never {
        fatalError("fuzz invariant broken: \(message)")
    }
}
