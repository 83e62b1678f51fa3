/// Where in a document a value lives: `spec.wireguard.peers[1].allowedIPs[0]`.
public struct FieldPath: Sendable, Hashable, CustomStringConvertible {
    public enum Component: Sendable, Hashable {
        case key(String)
        case index(Int)
    }

    public var components: [Component]

    public init(_ components: [Component] = []) {
        self.components = components
    }

    public static let root = FieldPath()

    public func appending(_ key: String) -> FieldPath {
        FieldPath(components + [.key(key)])
    }

    public func appending(index: Int) -> FieldPath {
        FieldPath(components + [.index(index)])
    }

    public static func + (lhs: FieldPath, rhs: String) -> FieldPath { lhs.appending(rhs) }

    public var description: String {
        var out = ""
        for c in components {
            switch c {
            case .key(let k):
                if !out.isEmpty { out += "." }
                out += k
            case .index(let i):
                out += "[\(i)]"
            }
        }
        return out
    }
}

/// One problem found in a file, pointing at the spot: `FILE:LINE:COL: error: PATH: message`,
/// the format gcc and clang use, so editors jump to it.
public struct Diagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, machine-readable category. New codes may be added; match with `==`.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let io = Code(rawValue: "io")
        public static let empty = Code(rawValue: "empty")
        public static let notUTF8 = Code(rawValue: "notUTF8")
        public static let binary = Code(rawValue: "binary")
        public static let syntax = Code(rawValue: "syntax")
        public static let tabIndentation = Code(rawValue: "tabIndentation")
        public static let duplicateKey = Code(rawValue: "duplicateKey")
        public static let unknownAlias = Code(rawValue: "unknownAlias")
        public static let aliasBudgetExceeded = Code(rawValue: "aliasBudgetExceeded")
        public static let tooDeep = Code(rawValue: "tooDeep")
        public static let multipleDocuments = Code(rawValue: "multipleDocuments")
        public static let unsupported = Code(rawValue: "unsupported")
        public static let unknownKey = Code(rawValue: "unknownKey")
        public static let missingField = Code(rawValue: "missingField")
        public static let typeMismatch = Code(rawValue: "typeMismatch")
        public static let invalidValue = Code(rawValue: "invalidValue")
        public static let inlineSecret = Code(rawValue: "inlineSecret")
        public static let conflict = Code(rawValue: "conflict")
    }

    public var file: String
    public var mark: Mark
    public var path: FieldPath
    public var code: Code
    public var message: String

    public init(file: String, mark: Mark, path: FieldPath = .root, code: Code, message: String) {
        self.file = file
        self.mark = mark
        self.path = path
        self.code = code
        self.message = message
    }

    public var description: String {
        let where_ = path.components.isEmpty ? "" : "\(path): "
        return "\(file):\(mark.line):\(mark.column): error: \(where_)\(message)"
    }
}

/// Thrown by parsing and decoding when one or more diagnostics were found; each names its spot.
public struct DiagnosticsError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]

    public init(_ diagnostics: [Diagnostic]) {
        self.diagnostics = diagnostics
    }

    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}
