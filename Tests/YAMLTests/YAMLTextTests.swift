import Testing
@testable import YAML

@Suite("JSONValue.yamlText: block YAML that reads back as the same value")
struct YAMLTextTests {
    func roundTrip(_ value: JSONValue) throws -> JSONValue {
        JSONValue(try YAMLParser().parseDocument(Array(value.yamlText.utf8), file: "t.yaml"))
    }

    static let awkward: [String] = [
        "", " ", "yes", "No", "on", "OFF", "y", "n", "null", "~", "true", "False", "0777", "1e3", "0x1F", "12:30", ".inf", "-1", "+1",
        "1_000", "- item", "key: value", "a #comment", "#", "&anchor", "*alias", "!tag", "|", ">", "%", "@", "`", "'", "\"", "[x]", "{x}",
        "tab\there", "trailing ", " leading", "line\nbreak", "ends\n", "two\n\n", "\n", "crlf\r\n", "ünïcödé", "emoji 🚀", "\u{7F}", "nul\u{0}",
        "https://example.com/a?b=c#d", "C:\\path", "\u{05B1}ano", " \u{301}a\nb", "multi\n  indented\nlines\n", "   \nspaces-only line\n", "a: b\nc: d\n",
    ]

    @Test(arguments: awkward)
    func everyStringSurvives(_ s: String) throws {
        let value = JSONValue.object(["k": .string(s), "list": .array([.string(s), .object(["nested": .string(s)])]), s: .string("as a key")])
        #expect(try roundTrip(value) == value, "\(value.yamlText)")
    }

    /// Found by fuzzing: a multi-line string alone was a literal block with its lines at column 0,
    /// which ends the block; and `.inf` was written for infinity but read back as a string.
    @Test func aMultiLineStringAloneAndTheSpecialFloatsReadBack() throws {
        for s in ["api\n\nvps-1}", "a\nb\n", "x\n  y"] {
            #expect(try roundTrip(.string(s)) == .string(s), "\(JSONValue.string(s).yamlText)")
        }
        let floats = JSONValue.object(["inf": .double(.infinity), "minus": .double(-.infinity), "big": .double(1e300)])
        #expect(try roundTrip(floats) == floats, "\(floats.yamlText)")
        guard case .double(let nan) = try roundTrip(.double(.nan)) else { Issue.record("NaN did not read back as a float"); return }
        #expect(nan.isNaN)
        // As YAML 1.2's core schema says: quoted, they stay strings.
        #expect(JSONValue(try YAMLParser().parseDocument(Array("a: '.inf'\n".utf8), file: "t")) == .object(["a": .string(".inf")]))
    }

    @Test func scalarsListsAndMapsKeepTheirTypes() throws {
        let value = JSONValue.object([
            "int": .int(-42), "double": .double(2.5), "bool": .bool(false), "null": .null, "empty map": .object([]), "empty list": .array([]),
            "lists": .array([.array([.int(1), .int(2)]), .array([]), .object(["a": .int(1), "b": .array([.string("x")])])]),
            "deep": .object(["a": .object(["b": .object(["c": .string("d")])])]),
        ])
        #expect(try roundTrip(value) == value, "\(value.yamlText)")
    }

    @Test func readsLikeAPersonWouldWriteIt() {
        let value = JSONValue.object([
            "grafana": .object(["adminUser": .string("admin"), "replicas": .int(1)]),
            "hosts": .array([.string("a.example.com"), .string("b.example.com")]),
            "script": .string("echo one\necho two\n"),
            "version": .string("7.7.11"),
        ])
        #expect(value.yamlText == """
            grafana:
              adminUser: admin
              replicas: 1
            hosts:
            - a.example.com
            - b.example.com
            script: |
              echo one
              echo two
            version: "7.7.11"

            """)
    }
}
