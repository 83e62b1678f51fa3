/// One node of a parsed YAML document, with the position it started at.
///
/// Aliases are resolved while parsing: an alias becomes a copy of the anchored node (copies share
/// storage, so memory stays bounded; the parser's expansion budget bounds the work of walking them).
public struct YAMLNode: Sendable {
    public enum Content: Sendable {
        case scalar(Scalar)
        case sequence([YAMLNode])
        case mapping([Pair])
    }

    /// A scalar's text, how it was written, and its explicit tag (such as `!!str`), if any.
    public struct Scalar: Sendable, Equatable {
        public enum Style: Sendable, Equatable {
            case plain, singleQuoted, doubleQuoted, literal, folded
        }

        public var text: String
        public var style: Style
        public var tag: String?

        public init(text: String, style: Style = .plain, tag: String? = nil) {
            self.text = text
            self.style = style
            self.tag = tag
        }
    }

    /// One key/value entry of a mapping, in document order.
    public struct Pair: Sendable {
        public var key: YAMLNode
        public var value: YAMLNode

        public init(key: YAMLNode, value: YAMLNode) {
            self.key = key
            self.value = value
        }
    }

    public var content: Content
    public var mark: Mark

    public init(_ content: Content, mark: Mark) {
        self.content = content
        self.mark = mark
    }

    public var scalar: Scalar? {
        if case .scalar(let s) = content { return s }
        return nil
    }

    public var sequence: [YAMLNode]? {
        if case .sequence(let items) = content { return items }
        return nil
    }

    public var mapping: [Pair]? {
        if case .mapping(let pairs) = content { return pairs }
        return nil
    }

    /// The value of the first entry whose key is the scalar `key`.
    public subscript(key: String) -> YAMLNode? {
        mapping?.first { $0.key.scalar?.text == key }?.value
    }

    /// A plain `null`, `~`, empty plain scalar, or an explicit `!!null`.
    public var isNull: Bool {
        guard let s = scalar else { return false }
        if s.tag == "tag:yaml.org,2002:null" { return true }
        guard s.style == .plain, s.tag == nil else { return false }
        return s.text.isEmpty || s.text == "~" || s.text == "null" || s.text == "Null" || s.text == "NULL"
    }

    /// What kind of node this is, for error messages ("expected a mapping, found a sequence").
    public var kindDescription: String {
        switch content {
        case .mapping: return "a mapping"
        case .sequence: return "a sequence"
        case .scalar(let s):
            if isNull { return "null" }
            switch ResolvedScalar(s) {
            case .bool: return "a boolean"
            case .int: return "an integer"
            case .float: return "a number"
            case .string, .null: return "a string"
            }
        }
    }
}

/// A scalar's value under the YAML 1.2 core schema, which nodeagent uses throughout: plain
/// `true`/`false` are booleans (not `yes`/`no`/`on`/`off`), plain decimal digits are integers,
/// quoted text is always a string.
public enum ResolvedScalar: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)

    public init(_ s: YAMLNode.Scalar) {
        switch s.tag {
        case "tag:yaml.org,2002:str":
            self = .string(s.text); return
        case "tag:yaml.org,2002:int":
            self = Int(s.text).map(ResolvedScalar.int) ?? .string(s.text); return
        case "tag:yaml.org,2002:bool":
            self = (s.text == "true") ? .bool(true) : (s.text == "false" ? .bool(false) : .string(s.text)); return
        case "tag:yaml.org,2002:null":
            self = .null; return
        default:
            break
        }
        guard s.style == .plain else {
            self = .string(s.text)
            return
        }
        switch s.text {
        case "", "~", "null", "Null", "NULL": self = .null
        case "true", "True", "TRUE": self = .bool(true)
        case "false", "False", "FALSE": self = .bool(false)
        // The core schema's special floats (what `yamlText` writes for them).
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": self = .float(.infinity)
        case "-.inf", "-.Inf", "-.INF": self = .float(-.infinity)
        case ".nan", ".NaN", ".NAN": self = .float(.nan)
        default:
            if let i = ResolvedScalar.integer(s.text) {
                self = .int(i)
            } else if ResolvedScalar.looksLikeFloat(s.text), let d = Double(s.text) {
                self = .float(d)
            } else {
                self = .string(s.text)
            }
        }
    }

    private static func integer(_ text: String) -> Int? {
        var digits = Substring(text)
        if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(text)
    }

    private static func looksLikeFloat(_ text: String) -> Bool {
        // The core schema's float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
        guard let first = text.first, first.isNumber || first == "-" || first == "+" || first == "." else {
            return false
        }
        return text.allSatisfy { $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) }
            && text.contains { $0.isNumber }
    }
}
