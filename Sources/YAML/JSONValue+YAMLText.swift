extension JSONValue {
    /// Block-style YAML for people to read (`nodeagent render`, Helm `valuesContent`), that any
    /// YAML 1.1 or 1.2 parser reads back as the same value.
    ///
    /// Strings stay plain only when no parser could take them for anything else (`yes`, `0777`,
    /// `1e3`, `12:30` are quoted); multi-line strings become literal blocks (`|`), everything
    /// unusual a JSON-escaped double-quoted string.
    public var yamlText: String {
        var out = ""
        switch self {
        case .object(let m) where !m.isEmpty: Self.writeMapping(m, indent: 0, into: &out)
        case .array(let a) where !a.isEmpty: Self.writeSequence(a, indent: 0, into: &out)
        default:
            // A literal block's lines are indented even here: at column 0 they would end it.
            out += inlineScalar(indent: 2)
            out += "\n"
        }
        return out
    }

    private static func writeMapping(_ members: [Member], indent: Int, into out: inout String) {
        let pad = String(repeating: " ", count: indent)
        for m in members {
            out += pad + scalarText(m.key, indent: indent, allowBlock: false) + ":"
            writeValue(m.value, indent: indent, into: &out)
        }
    }

    private static func writeSequence(_ items: [JSONValue], indent: Int, into out: inout String) {
        let pad = String(repeating: " ", count: indent)
        for item in items {
            switch item {
            case .object(let m) where !m.isEmpty:
                // The first key on the dash's line, the others under it.
                var nested = ""
                writeMapping(m, indent: indent + 2, into: &nested)
                // By scalars, not Characters: a key starting with a combining mark forms one
                // Character with the space before it.
                out += pad + "- " + String(nested.unicodeScalars.dropFirst(indent + 2))
            case .array(let a) where !a.isEmpty:
                out += pad + "-\n"
                writeSequence(a, indent: indent + 2, into: &out)
            default:
                out += pad + "- " + item.inlineScalar(indent: indent + 2) + "\n"
            }
        }
    }

    /// After `key:`: a space and a scalar, or a newline and the nested block.
    private static func writeValue(_ value: JSONValue, indent: Int, into out: inout String) {
        switch value {
        case .object(let m) where !m.isEmpty:
            out += "\n"
            writeMapping(m, indent: indent + 2, into: &out)
        case .array(let a) where !a.isEmpty:
            out += "\n"
            writeSequence(a, indent: indent, into: &out)
        default:
            out += " " + value.inlineScalar(indent: indent + 2) + "\n"
        }
    }

    /// A scalar or an empty collection; `indent` is where a literal block's lines start.
    private func inlineScalar(indent: Int) -> String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? String(d) : (d.isNaN ? ".nan" : (d < 0 ? "-.inf" : ".inf"))
        case .string(let s): return Self.scalarText(s, indent: indent, allowBlock: true)
        case .array: return "[]"
        case .object: return "{}"
        }
    }

    static func scalarText(_ s: String, indent: Int, allowBlock: Bool) -> String {
        if isPlainSafe(s) { return s }
        if allowBlock, let block = literalBlock(s, indent: indent) { return block }
        var out = ""
        quote(s, into: &out)
        return out
    }

    /// Words that YAML 1.1 parsers (Helm's, kubectl's) resolve to booleans or null.
    private static let reserved: Set<String> = ["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"]

    static func isPlainSafe(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, let last = s.unicodeScalars.last else { return false }
        guard first.properties.isAlphabetic || first == "/", last != " ", last != ":" else { return false }
        guard !reserved.contains(s.lowercased()) else { return false }
        guard !s.contains(": "), !s.contains(" #") else { return false }
        return s.unicodeScalars.allSatisfy { u in
            (u.value >= 0x80 && u.properties.isAlphabetic) || (u.isASCII && (u.properties.isAlphabetic || ("0"..."9").contains(u)
                || " ._/@:+-=".unicodeScalars.contains(u)))
        }
    }

    /// `|` (one final newline) or `|-` (none), when the text has no characters a block
    /// cannot carry as they are; nil otherwise.
    private static func literalBlock(_ s: String, indent: Int) -> String? {
        guard s.contains("\n"), !s.hasSuffix("\n\n"), s.unicodeScalars.first != " ", !s.hasPrefix("\n") else { return nil }
        guard s.unicodeScalars.allSatisfy({ $0 == "\n" || ($0.value >= 0x20 && $0.value != 0x7F && $0 != "\u{FEFF}"
                                                           && $0 != "\u{85}" && $0 != "\u{2028}" && $0 != "\u{2029}") }) else { return nil }
        let pad = String(repeating: " ", count: indent)
        let body = s.hasSuffix("\n") ? String(s.dropLast()) : s
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false)
        // A line of only spaces would read as indentation; a block cannot show it.
        guard !lines.contains(where: { !$0.isEmpty && $0.allSatisfy { $0 == " " } }) else { return nil }
        return (s.hasSuffix("\n") ? "|" : "|-") + lines.map { $0.isEmpty ? "\n" : "\n" + pad + $0 }.joined()
    }
}
