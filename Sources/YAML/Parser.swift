internal import CYaml

/// Parses YAML text into node trees with line/column marks, through libyaml's event API.
///
/// Besides libyaml's own syntax checks it refuses, each with a `Diagnostic` naming the spot:
/// text that is not UTF-8 or holds control characters (binary input), tabs used for
/// indentation, duplicate mapping keys, non-scalar keys, unknown aliases, alias expansion beyond
/// `Limits.maxNodes` (a "billion laughs" file fails at the first alias past the budget, in
/// bounded memory), and nesting deeper than `Limits.maxDepth`. The tree is built with an explicit
/// stack, never by recursion, so depth cannot overflow the call stack.
public struct YAMLParser: Sendable {
    public struct Limits: Sendable {
        /// Nodes a document may expand to, counting every alias as a full copy of its anchor.
        public var maxNodes: Int
        /// Collections nested in collections, counting the outermost as 1.
        public var maxDepth: Int

        public init(maxNodes: Int = 500_000, maxDepth: Int = 64) {
            self.maxNodes = maxNodes
            self.maxDepth = maxDepth
        }
    }

    public var limits: Limits

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Parses every document of a stream (`---` separates documents).
    /// - Parameters:
    ///   - bytes: the file's content.
    ///   - file: the name diagnostics print.
    /// - Returns: one root node per document; empty when the text holds no document at all.
    public func parseStream(_ bytes: [UInt8], file: String) throws(DiagnosticsError) -> [YAMLNode] {
        do {
            try TextCheck.check(bytes, file: file)
            if bytes.isEmpty { return [] }
            return try EventReader(bytes: bytes, file: file, limits: limits).read()
        } catch {
            throw DiagnosticsError([error])
        }
    }

    /// Parses text that must hold exactly one document.
    public func parseDocument(_ bytes: [UInt8], file: String) throws(DiagnosticsError) -> YAMLNode {
        let docs = try parseStream(bytes, file: file)
        guard let first = docs.first else {
            throw DiagnosticsError([Diagnostic(file: file, mark: .start, code: .empty,
                                               message: "the file is empty: expected a YAML document")])
        }
        if docs.count > 1 {
            throw DiagnosticsError([Diagnostic(file: file, mark: docs[1].mark, code: .multipleDocuments,
                                               message: "expected one YAML document, found \(docs.count); remove the extra '---' sections")])
        }
        return first
    }
}

/// Checks raw bytes before libyaml sees them, for messages that say what is really wrong.
enum TextCheck {
    static func check(_ bytes: [UInt8], file: String) throws(Diagnostic) {
        if bytes.starts(with: [0xFE, 0xFF]) || bytes.starts(with: [0xFF, 0xFE]) {
            throw Diagnostic(file: file, mark: .start, code: .notUTF8,
                             message: "the file is UTF-16 encoded; save it as UTF-8")
        }
        var line = 1, column = 1, i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b < 0x80 {
                if b == 0x0A {
                    line += 1
                    column = 1
                } else {
                    if b == 0x0D && (i + 1 == n || bytes[i + 1] != 0x0A) {
                        throw Diagnostic(file: file, mark: Mark(line: line, column: column), code: .binary,
                                         message: "a carriage return without a line feed: YAML counts it as a line break, editors do not; save the file with LF (or CRLF) line endings")
                    }
                    if (b < 0x20 && b != 0x09 && b != 0x0D) || b == 0x7F {
                        throw Diagnostic(file: file, mark: Mark(line: line, column: column), code: .binary,
                                         message: "control character 0x\(hex(b)) in the text: this looks like a binary file, not YAML")
                    }
                    column += 1
                }
                i += 1
                continue
            }
            let length = utf8SequenceLength(bytes, at: i)
            guard length > 0 else {
                throw Diagnostic(file: file, mark: Mark(line: line, column: column), code: .notUTF8,
                                 message: "invalid UTF-8 byte 0x\(hex(bytes[i])): the file must be UTF-8 text")
            }
            // NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR: line breaks to YAML 1.1 (and to libyaml's
            // line numbers), invisible text to an editor.
            let scalar = bytes[i..<(i + length)]
            if scalar.elementsEqual([0xC2, 0x85]) || scalar.elementsEqual([0xE2, 0x80, 0xA8]) || scalar.elementsEqual([0xE2, 0x80, 0xA9]) {
                let name = length == 2 ? "U+0085 (NEXT LINE)" : (bytes[i + 2] == 0xA8 ? "U+2028 (LINE SEPARATOR)" : "U+2029 (PARAGRAPH SEPARATOR)")
                throw Diagnostic(file: file, mark: Mark(line: line, column: column), code: .binary,
                                 message: "\(name) in the text: YAML counts it as a line break, editors do not; inside a double-quoted string, write it as an escape (\\u2028)")
            }
            i += length
            column += 1
        }
    }

    /// The length of the well-formed UTF-8 sequence at `i` (RFC 3629: no overlongs, no
    /// surrogates, nothing above U+10FFFF), or 0 when it is malformed.
    private static func utf8SequenceLength(_ b: [UInt8], at i: Int) -> Int {
        let lead = b[i]
        let length: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        default: return 0
        }
        guard i + length <= b.count else { return 0 }
        guard (low...high).contains(b[i + 1]) else { return 0 }
        for k in 2..<length where !(0x80...0xBF).contains(b[i + k]) { return 0 }
        return length
    }

    static func hex(_ b: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(b >> 4)], digits[Int(b & 0x0F)]])
    }

    /// The bytes of 1-based line `line`, without its newline.
    static func lineBytes(_ bytes: [UInt8], line: Int) -> ArraySlice<UInt8> {
        var current = 1, start = 0
        for (i, b) in bytes.enumerated() where b == 0x0A {
            if current == line { return bytes[start..<i] }
            current += 1
            start = i + 1
        }
        return current == line ? bytes[start...] : []
    }
}

/// Turns libyaml events into `YAMLNode` trees. One instance per parse; owns the libyaml parser.
private final class EventReader {
    private struct Frame {
        var isMapping: Bool
        var mark: Mark
        var anchor: String?
        var tag: String?
        var items: [YAMLNode] = []
        var pairs: [YAMLNode.Pair] = []
        var pendingKey: YAMLNode?
        var keyMarks: [String: Mark] = [:]
        var weight = 1
    }

    private let bytes: [UInt8]
    private let file: String
    private let limits: YAMLParser.Limits
    private let parser: UnsafeMutablePointer<yaml_parser_t>
    private var stack: [Frame] = []
    private var anchors: [String: (node: YAMLNode, weight: Int)] = [:]
    private var expanded = 0
    private var documents: [YAMLNode] = []
    private var root: YAMLNode?

    init(bytes: [UInt8], file: String, limits: YAMLParser.Limits) {
        self.bytes = bytes
        self.file = file
        self.limits = limits
        parser = .allocate(capacity: 1)
        parser.initialize(to: yaml_parser_t())
    }

    deinit {
        parser.deinitialize(count: 1)
        parser.deallocate()
    }

    func read() throws(Diagnostic) -> [YAMLNode] {
        guard yaml_parser_initialize(parser) == 1 else {
            throw Diagnostic(file: file, mark: .start, code: .io, message: "libyaml could not allocate a parser")
        }
        defer { yaml_parser_delete(parser) }
        // libyaml keeps the input pointer, so every parse call happens inside this closure.
        let result: Result<[YAMLNode], Diagnostic> = bytes.withUnsafeBufferPointer { buffer in
            yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count)
            yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING)
            do throws(Diagnostic) {
                try loop()
                return .success(documents)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private func loop() throws(Diagnostic) {
        var event = yaml_event_t()
        while true {
            guard yaml_parser_parse(parser, &event) == 1 else { throw syntaxError() }
            defer { yaml_event_delete(&event) }
            let mark = Mark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return
            case YAML_DOCUMENT_START_EVENT:
                root = nil
                anchors = [:]
                expanded = 0
            case YAML_DOCUMENT_END_EVENT:
                if let root { documents.append(root) }
            case YAML_SCALAR_EVENT:
                let s = event.data.scalar
                let text = string(s.value, Int(s.length)) ?? ""
                let scalar = YAMLNode.Scalar(text: text, style: style(s.style), tag: string(s.tag))
                let node = YAMLNode(.scalar(scalar), mark: mark)
                try charge(1, at: mark)
                try add(node, weight: 1, anchor: string(s.anchor))
            case YAML_ALIAS_EVENT:
                let name = string(event.data.alias.anchor) ?? ""
                guard let target = anchors[name] else {
                    throw Diagnostic(file: file, mark: mark, code: .unknownAlias, message: "unknown alias *\(name): no anchor &\(name) before it")
                }
                try charge(target.weight, at: mark)
                try add(target.node, weight: target.weight, anchor: nil)
            case YAML_SEQUENCE_START_EVENT:
                try push(Frame(isMapping: false, mark: mark, anchor: string(event.data.sequence_start.anchor)))
            case YAML_MAPPING_START_EVENT:
                try push(Frame(isMapping: true, mark: mark, anchor: string(event.data.mapping_start.anchor)))
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                let frame = stack.removeLast()
                let content: YAMLNode.Content = frame.isMapping ? .mapping(frame.pairs) : .sequence(frame.items)
                try add(YAMLNode(content, mark: frame.mark), weight: frame.weight, anchor: frame.anchor)
            default:
                break
            }
        }
    }

    private func push(_ frame: Frame) throws(Diagnostic) {
        if stack.count >= limits.maxDepth {
            throw Diagnostic(file: file, mark: frame.mark, code: .tooDeep,
                             message: "collections nested deeper than \(limits.maxDepth) levels")
        }
        try charge(1, at: frame.mark)
        stack.append(frame)
    }

    private func charge(_ weight: Int, at mark: Mark) throws(Diagnostic) {
        expanded += weight
        if expanded > limits.maxNodes {
            throw Diagnostic(file: file, mark: mark, code: .aliasBudgetExceeded,
                             message: "the document expands to more than \(limits.maxNodes) nodes (an alias bomb?)")
        }
    }

    private func add(_ node: YAMLNode, weight: Int, anchor: String?) throws(Diagnostic) {
        if let anchor { anchors[anchor] = (node, weight) }
        guard !stack.isEmpty else {
            root = node
            return
        }
        let top = stack.count - 1
        stack[top].weight += weight
        guard stack[top].isMapping else {
            stack[top].items.append(node)
            return
        }
        guard let key = stack[top].pendingKey else {
            guard let keyText = node.scalar?.text else {
                throw Diagnostic(file: file, mark: node.mark, code: .unsupported,
                                 message: "mapping keys must be plain scalars, not \(node.kindDescription)")
            }
            if let first = stack[top].keyMarks[keyText] {
                throw Diagnostic(file: file, mark: node.mark, code: .duplicateKey,
                                 message: "duplicate mapping key \"\(keyText)\" (first defined at \(first))")
            }
            stack[top].keyMarks[keyText] = node.mark
            stack[top].pendingKey = node
            return
        }
        stack[top].pairs.append(YAMLNode.Pair(key: key, value: node))
        stack[top].pendingKey = nil
    }

    private func syntaxError() -> Diagnostic {
        let p = parser.pointee
        let problem = p.problem.map { String(cString: $0) } ?? "unknown error"
        let context = p.context.map { String(cString: $0) }
        var mark = Mark(line: Int(p.problem_mark.line) + 1, column: Int(p.problem_mark.column) + 1)
        // libyaml reports a tab in indentation as "found character that cannot start any token";
        // say what it is.
        let lineBytes = TextCheck.lineBytes(bytes, line: mark.line)
        let indent = lineBytes.prefix { $0 == 0x20 || $0 == 0x09 }
        if let tab = indent.firstIndex(of: 0x09), indent.count < lineBytes.count {
            mark.column = tab - lineBytes.startIndex + 1
            return Diagnostic(file: file, mark: mark, code: .tabIndentation,
                              message: "tab character used for indentation; YAML indents with spaces only")
        }
        let message = context.map { "\($0) \(problem)" } ?? problem
        return Diagnostic(file: file, mark: mark, code: .syntax, message: message)
    }

    private func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?, _ length: Int? = nil) -> String? {
        guard let pointer else { return nil }
        let count = length ?? strlenU(pointer)
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    private func strlenU(_ p: UnsafeMutablePointer<yaml_char_t>) -> Int {
        var n = 0
        while p[n] != 0 { n += 1 }
        return n
    }

    private func style(_ s: yaml_scalar_style_t) -> YAMLNode.Scalar.Style {
        switch s {
        case YAML_SINGLE_QUOTED_SCALAR_STYLE: return .singleQuoted
        case YAML_DOUBLE_QUOTED_SCALAR_STYLE: return .doubleQuoted
        case YAML_LITERAL_SCALAR_STYLE: return .literal
        case YAML_FOLDED_SCALAR_STYLE: return .folded
        default: return .plain
        }
    }
}
