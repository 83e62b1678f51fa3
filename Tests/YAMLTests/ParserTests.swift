import Testing
@testable import YAML

@Suite("YAML parser")
struct ParserTests {
    let parser = YAMLParser()

    func parse(_ text: String) throws -> YAMLNode {
        try parser.parseDocument(Array(text.utf8), file: "t.yaml")
    }

    func failure(_ bytes: [UInt8], limits: YAMLParser.Limits = .init()) -> Diagnostic? {
        do {
            _ = try YAMLParser(limits: limits).parseDocument(bytes, file: "t.yaml")
            return nil
        } catch {
            return error.diagnostics.first
        }
    }

    func failure(_ text: String) -> Diagnostic? { failure(Array(text.utf8)) }

    @Test func marksEveryNodeWithLineAndColumn() throws {
        let root = try parse("a: 1\nb:\n  - x\n  - {c: d}\n")
        #expect(root.mark == Mark(line: 1, column: 1))
        #expect(root["a"]?.mark == Mark(line: 1, column: 4))
        let items = try #require(root["b"]?.sequence)
        #expect(items[0].mark == Mark(line: 3, column: 5))
        #expect(items[1]["c"]?.mark == Mark(line: 4, column: 9))
        #expect(items[1]["c"]?.scalar?.text == "d")
    }

    @Test func columnsCountCharactersNotBytes() {
        let d = failure("name: \"héllo\"\nname: again\n")
        #expect(d?.code == .duplicateKey)
        #expect(d?.mark == Mark(line: 2, column: 1))
        #expect(d?.message.contains("first defined at 1:1") == true)
        let tab = failure("é: 1\nb:\n\tc: 1\n")
        #expect(tab?.code == .tabIndentation)
        #expect(tab?.mark == Mark(line: 3, column: 1))
    }

    @Test func duplicateKeysInNestedMappings() {
        let d = failure("outer:\n  k: 1\n  other: 2\n  k: 3\n")
        #expect(d?.code == .duplicateKey)
        #expect(d?.mark == Mark(line: 4, column: 3))
        #expect(d?.description == "t.yaml:4:3: error: duplicate mapping key \"k\" (first defined at 2:3)")
    }

    @Test func syntaxErrorsCarryLibyamlPosition() {
        let d = failure("a: [1, 2\nb: 3\n")
        #expect(d?.code == .syntax)
        #expect(d?.mark.line == 2)
        #expect(d?.message.contains("flow sequence") == true)
    }

    @Test func emptyAndCommentOnlyFilesAreRefused() {
        #expect(failure("")?.code == .empty)
        #expect(failure("# just a comment\n\n")?.code == .empty)
        #expect(failure("")?.description == "t.yaml:1:1: error: the file is empty: expected a YAML document")
    }

    @Test func streamsKeepEveryDocument() throws {
        let docs = try parser.parseStream(Array("a: 1\n---\nb: 2\n".utf8), file: "t.yaml")
        #expect(docs.count == 2)
        #expect(docs[1]["b"]?.mark == Mark(line: 3, column: 4))
        #expect(failure("a: 1\n---\nb: 2\n")?.code == .multipleDocuments)
    }

    @Test func billionLaughsFailsAtTheBudget() {
        var text = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        let names = Array("abcdefghij")
        for i in 1..<names.count {
            let refs = Array(repeating: "*\(names[i - 1])", count: 9).joined(separator: ",")
            text += "\(names[i]): &\(names[i]) [\(refs)]\n"
        }
        let d = failure(Array(text.utf8), limits: .init(maxNodes: 10_000))
        #expect(d?.code == .aliasBudgetExceeded)
        // Level d alone expands to 7381 nodes; the budget is crossed inside level e (line 5).
        #expect(d?.mark.line == 5)
    }

    @Test func aliasesWithinBudgetResolveToCopies() throws {
        let root = try parse("base: &b {x: 1}\nuse: *b\n")
        #expect(root["use"]?["x"]?.scalar?.text == "1")
        #expect(failure("use: *nothing\n")?.code == .unknownAlias)
    }

    @Test func deepNestingIsRefusedWithoutRecursion() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let d = failure(deep)
        #expect(d?.code == .tooDeep)
        #expect(d?.mark == Mark(line: 1, column: 65))
        let deepBlock = (0..<100).map { String(repeating: "  ", count: $0) + "k\($0):" }.joined(separator: "\n") + " end\n"
        #expect(failure(deepBlock)?.code == .tooDeep)
    }

    @Test func randomBytesAreRefusedWithoutCrash() {
        // A fixed-seed generator: the same mebibyte every run.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        for i in bytes.indices {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            bytes[i] = UInt8(truncatingIfNeeded: state)
        }
        let d = failure(bytes)
        #expect(d?.code == .binary || d?.code == .notUTF8)
    }

    @Test(arguments: [
        ([0x61, 0x3A, 0x20, 0xC3, 0x28] as [UInt8], Diagnostic.Code.notUTF8, Mark(line: 1, column: 4)),
        ([0x61, 0x3A, 0x20, 0xED, 0xA0, 0x80], .notUTF8, Mark(line: 1, column: 4)),   // a UTF-16 surrogate
        ([0x61, 0x3A, 0x20, 0xC0, 0xAF], .notUTF8, Mark(line: 1, column: 4)),         // an overlong "/"
        ([0x0A, 0x61, 0x00], .binary, Mark(line: 2, column: 2)),
        ([0xFF, 0xFE, 0x61, 0x00], .notUTF8, Mark(line: 1, column: 1)),               // UTF-16 LE BOM
    ])
    func nonTextInputNamesTheByte(bytes: [UInt8], code: Diagnostic.Code, mark: Mark) {
        let d = failure(bytes)
        #expect(d?.code == code)
        #expect(d?.mark == mark)
    }

    @Test func blockScalarsKeepTheirText() throws {
        let root = try parse("script: |\n  line one\n  \tindented with a tab inside\n")
        #expect(root["script"]?.scalar?.text == "line one\n\tindented with a tab inside\n")
        #expect(root["script"]?.scalar?.style == .literal)
    }

    @Test(arguments: [
        ("x: 42", ResolvedScalar.int(42)),
        ("x: -7", .int(-7)),
        ("x: \"42\"", .string("42")),
        ("x: 1.5", .float(1.5)),
        ("x: 1.2.3", .string("1.2.3")),
        ("x: true", .bool(true)),
        ("x: yes", .string("yes")),
        ("x: ~", .null),
        ("x:", .null),
        ("x: !!str 12", .string("12")),
        ("x: 0x1F", .string("0x1F")),
    ])
    func scalarsResolveByTheCoreSchema(text: String, expected: ResolvedScalar) throws {
        let node = try #require(try parse(text)["x"]?.scalar)
        #expect(ResolvedScalar(node) == expected)
    }
}

@Suite("Decoding helpers")
struct DecodingTests {
    @Test(arguments: [
        ("listenport", ["listenPort", "address"], "listenPort"),
        ("adress", ["address", "peers"], "address"),
        ("fire", ["firewall", "wireguard"], "firewall"),
        ("zzz", ["address", "peers"], nil),
    ] as [(String, [String], String?)])
    func suggestionsCatchTypos(word: String, candidates: [String], expected: String?) {
        #expect(Suggestion.closest(to: word, in: candidates) == expected)
    }

    @Test(arguments: [
        ("password", true), ("adminPassword", true), ("smtp_password", true), ("token", true), ("apiKey", true),
        ("privateKey", true), ("secret", true), ("clientSecret", true), ("aws-secret-access-key", true),
        ("passwordFile", false), ("tokenFile", false), ("existingSecret", false), ("adminPasswordKey", false),
        ("publicKey", false), ("authorizedKeys", false), ("secretName", false), ("usePasswordFiles", false),
    ])
    func secretLikeKeys(key: String, secret: Bool) {
        #expect(SecretKeys.isSecretLike(key) == secret)
    }

    @Test func secretScanSkipsBooleansAndEmptyValues() throws {
        let node = try YAMLParser().parseDocument(Array("a: {password: \"\"}\nb: {token: false}\nc: [{apiKey: k}]\n".utf8), file: "v.yaml")
        let context = DecodeContext(file: "v.yaml")
        #expect(SecretKeys.scan(node, path: .root, context: context, remedy: "use a file"))
        #expect(context.diagnostics.map(\.description) == [
            "v.yaml:3:6: error: c[0].apiKey: inline secret: \"apiKey\" must not hold a literal value in Git; use a file",
        ])
    }

    @Test func unknownKeysAreAllReported() throws {
        let node = try YAMLParser().parseDocument(Array("nmae: x\ncolour: y\nname: z\n".utf8), file: "m.yaml")
        let context = DecodeContext(file: "m.yaml")
        let reader = try MappingReader(node, path: .root, context: context, keys: ["name", "color"])
        #expect(try reader.required("name", as: String.self) == "z")
        #expect(throws: DecodeFailure.self) { try reader.finish() }
        #expect(context.diagnostics.map(\.description) == [
            "m.yaml:1:1: error: nmae: unknown key \"nmae\" (did you mean \"name\"?)",
            "m.yaml:2:1: error: colour: unknown key \"colour\" (did you mean \"color\"?)",
        ])
    }

    @Test func jsonTextEscapesControlCharacters() {
        let value = JSONValue.object(["a\"b": .string("line\nnext\u{01}"), "n": .array([.int(1), .double(1.5), .null, .bool(false)])])
        #expect(value.jsonText == #"{"a\"b":"line\nnext\u0001","n":[1,1.5,null,false]}"#)
    }
}
