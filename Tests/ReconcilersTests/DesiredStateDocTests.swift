import Testing
import TestSupport
import Reconcilers
import YAML

/// `docs/desired-state.md` against the decoders, so the reference and the code cannot drift.
///
/// The decoders are the source of truth: every mapping is read by a `MappingReader` that refuses
/// keys it does not know with "unknown key "X"; expected one of: A, B, C". The test walks them
/// from the shipped examples: it plants an unknown key at a path, decodes, and reads the allowed
/// keys from the error; a key whose value takes an unknown key of its own is a mapping (walked in
/// turn), one whose first list item does is a list of mappings, anything else is a field. The
/// fields found must be exactly the fields the document's reference tables list: a table under
/// a heading that is only a code span (`spec.os`, `platform.yaml` for the top level, `agent.yaml`
/// for the agent config) names its fields, relative to that heading, in its first column.
@Suite("docs/desired-state.md lists every field the decoders accept, and no other")
struct DesiredStateDocTests {
    static let docPath = Fixtures.repository + "/docs/desired-state.md"
    /// A key no decoder knows and no known key resembles (so the error lists every known key).
    static let probe = "zqxjkvbwpf"

    enum Step: Hashable {
        case key(String)
        case item
    }

    /// `spec.wireguard.peers[].name`: the document's notation.
    static func docName(_ path: [Step]) -> String {
        var out = ""
        for s in path {
            switch s {
            case .key(let k): out += (out.isEmpty ? "" : ".") + k
            case .item: out += "[]"
            }
        }
        return out
    }

    /// `spec.wireguard.peers[0].name`: the decoders' notation (the walk probes the first item).
    static func diagnosticName(_ path: [Step]) -> String {
        docName(path).replacing("[]", with: "[0]")
    }

    /// `value` with `leaf` set at `path`: missing or non-mapping steps become mappings, an
    /// `.item` step the first item of a list (made if the value is not a list of mappings).
    static func setting(_ value: JSONValue, _ path: ArraySlice<Step>, to leaf: JSONValue) -> JSONValue {
        guard let step = path.first else { return leaf }
        switch step {
        case .key(let k):
            var members = value.members ?? []
            if let i = members.firstIndex(where: { $0.key == k }) {
                members[i].value = setting(members[i].value, path.dropFirst(), to: leaf)
            } else {
                members.append(.init(k, setting(.object([]), path.dropFirst(), to: leaf)))
            }
            return .object(members)
        case .item:
            var items = value.array ?? []
            if items.isEmpty || items[0].members == nil { items = [.object([])] }
            items[0] = setting(items[0], path.dropFirst(), to: leaf)
            return .array(items)
        }
    }

    /// One kind of document: its example and its decoder (which returns the diagnostics).
    struct Document: Sendable {
        var example: String
        var decode: @Sendable ([UInt8]) -> [Diagnostic]

        static let platform = Document(example: Fixtures.repository + "/examples/platform.yaml") { bytes in
            do throws(DiagnosticsError) { _ = try DesiredStateLoader.load(bytes, file: "probe.yaml"); return [] } catch { return error.diagnostics }
        }
        static let agent = Document(example: Fixtures.repository + "/examples/agent.yaml") { bytes in
            do throws(DiagnosticsError) { _ = try AgentConfig.parse(bytes, file: "probe.yaml"); return [] } catch { return error.diagnostics }
        }

        /// The keys the mapping at `path` accepts, or nil when the value there is not a mapping
        /// that refuses unknown keys.
        func keys(at path: [Step], base: JSONValue) -> [String]? {
            let probed = setting(base, path[...] + [.key(probe)], to: .int(1))
            let name = diagnosticName(path + [.key(probe)])
            let refusal = decode(Array(probed.yamlText.utf8)).first { $0.code == .unknownKey && $0.path.description == name }
            guard let message = refusal?.message, let range = message.firstRange(of: "expected one of: ") else { return nil }
            return message[range.upperBound...].split(separator: ",").map { $0.trimmed(" ") }
        }

        /// Every field path under `path`, walking the decoders.
        func fields(under path: [Step] = [], base: JSONValue) -> Set<String> {
            guard let keys = keys(at: path, base: base) else { return [Self.docName(path)] }
            var out: Set<String> = []
            for key in keys {
                let child = path + [.key(key)]
                if self.keys(at: child, base: base) != nil {
                    out.formUnion(fields(under: child, base: base))
                } else if self.keys(at: child + [.item], base: base) != nil {
                    out.formUnion(fields(under: child + [.item], base: base))
                } else {
                    out.insert(Self.docName(child))
                }
            }
            return out
        }

        static func docName(_ path: [Step]) -> String { DesiredStateDocTests.docName(path) }

        func codeFields() throws -> Set<String> {
            let node = try YAMLParser().parseDocument(try FileReading.read(example), file: example)
            let base = JSONValue(node)
            #expect(decode(Array(base.yamlText.utf8)).isEmpty, "the example \(example) must be valid to walk from")
            return fields(base: base)
        }
    }

    /// The fields the document lists: (platform.yaml fields, agent.yaml fields).
    static func documentedFields() throws -> (platform: [String], agent: [String]) {
        let text = String(decoding: try FileReading.read(docPath), as: UTF8.self)
        var platform: [String] = [], agent: [String] = []
        var prefix: (agent: Bool, path: String)?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("#") {
                let title = line.drop { $0 == "#" }.trimmed(" ")
                prefix = nil
                guard title.count > 2, title.hasPrefix("`"), title.hasSuffix("`"),
                      !title.dropFirst().dropLast().contains("`") else { continue }
                let name = String(title.dropFirst().dropLast())
                switch name {
                case "platform.yaml": prefix = (false, "")
                case "agent.yaml": prefix = (true, "")
                default: prefix = (false, name)
                }
                continue
            }
            guard let p = prefix, line.hasPrefix("| `") else { continue }
            let cell = line.dropFirst(2).prefix { $0 != "|" }
            for field in cell.split(separator: "`", omittingEmptySubsequences: false).enumerated()
            where field.offset % 2 == 1 {
                let full = p.path.isEmpty ? String(field.element) : p.path + "." + field.element
                if p.agent { agent.append(full) } else { platform.append(full) }
            }
        }
        return (platform, agent)
    }

    /// The fields the walk finds in `document` are exactly `documented`, each listed once.
    static func expectSame(_ document: Document, _ documented: [String], file: String, atLeast minimum: Int) throws {
        let code = try document.codeFields()
        #expect(code.count > minimum, "the walk found only \(code.sorted())")
        #expect(code.subtracting(documented).sorted() == [], "fields of \(file) missing from docs/desired-state.md")
        #expect(Set(documented).subtracting(code).sorted() == [], "fields in docs/desired-state.md that the decoders refuse")
        #expect(documented.count == Set(documented).count, "a field listed twice")
    }

    @Test func everyPlatformFieldIsDocumentedAndNoOther() throws {
        try Self.expectSame(.platform, try Self.documentedFields().platform, file: "platform.yaml", atLeast: 60)
    }

    @Test func everyAgentConfigFieldIsDocumentedAndNoOther() throws {
        try Self.expectSame(.agent, try Self.documentedFields().agent, file: "agent.yaml", atLeast: 8)
    }

    /// The walk itself sees what it must: a known nested field, a list item's field, and a
    /// free-form mapping (Helm values) as one field.
    @Test func theWalkFindsNestedListAndFreeFormFields() throws {
        let code = try Document.platform.codeFields()
        for field in ["spec.os.ssh.port", "spec.wireguard.peers[].publicKey", "spec.helmReleases[].valuesSecrets[].file",
                      "spec.backups.postgres.connection.sslmode", "spec.helmReleases[].values", "metadata.name"] {
            #expect(code.contains(field), "\(field) not found by the walk")
        }
    }
}

extension StringProtocol {
    fileprivate func trimmed(_ c: Character) -> String {
        String(String(drop { $0 == c }.reversed().drop { $0 == c }.reversed()))
    }
}
