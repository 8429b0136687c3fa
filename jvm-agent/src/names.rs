//! Java names as the JVM's own perf map writes them (`Method::external_name()`), from what
//! JVMTI gives: a class signature (`Ljava/util/zip/GZIPOutputStream;`), a method name and its
//! descriptor (`(Ljava/io/OutputStream;)V`).

/// A method's names: `full` as HotSpot's perf map writes it (`void
/// java.util.zip.GZIPOutputStream.<init>(java.io.OutputStream)`), `short` without return type
/// and parameters (`java.util.zip.GZIPOutputStream.<init>`), for inline chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodNames {
    /// With return type and parameter types.
    pub full: String,
    /// `class.method`.
    pub short: String,
}

impl MethodNames {
    /// The names of method `name` with descriptor `descriptor` of the class whose signature is
    /// `class_signature`. A descriptor that does not parse gives `full` = `short`.
    pub fn new(class_signature: &str, name: &str, descriptor: &str) -> MethodNames {
        let short = format!("{}.{name}", class_name(class_signature));
        let full = match method_types(descriptor) {
            Some((parameters, returns)) => format!("{returns} {short}({})", parameters.join(", ")),
            None => short.clone(),
        };
        MethodNames { full, short }
    }
}

/// The external name of a class: `Ljava/util/Map$Entry;` → `java.util.Map$Entry`; a hidden
/// class's `Ljava/lang/invoke/LambdaForm$MH.0x0000000800c0c400;` →
/// `java.lang.invoke.LambdaForm$MH/0x0000000800c0c400` (as HotSpot writes it). Anything else is
/// kept as it is, with `/` and `.` swapped likewise.
pub fn class_name(signature: &str) -> String {
    let internal = signature
        .strip_prefix('L')
        .and_then(|s| s.strip_suffix(';'))
        .unwrap_or(signature);
    internal
        .chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// A method descriptor's parameter types and return type, as Java writes them:
/// `(Ljava/io/OutputStream;I[[BZ)V` → (`java.io.OutputStream`, `int`, `byte[][]`, `boolean`),
/// `void`. `None` if it is not a descriptor.
pub fn method_types(descriptor: &str) -> Option<(Vec<String>, String)> {
    let rest = descriptor.strip_prefix('(')?;
    let (parameters, returns) = rest.split_once(')')?;
    let mut types = Vec::new();
    let mut rest = parameters;
    while !rest.is_empty() {
        let (field, after) = field_type(rest)?;
        types.push(field);
        rest = after;
    }
    let returns = match returns {
        "V" => "void".to_string(),
        returns => match field_type(returns)? {
            (field, "") => field,
            _ => return None,
        },
    };
    Some((types, returns))
}

/// The first field type of `descriptor` and what follows it.
fn field_type(descriptor: &str) -> Option<(String, &str)> {
    let dimensions = descriptor.bytes().take_while(|&b| b == b'[').count();
    let rest = &descriptor[dimensions..];
    let (element, after) = match rest.as_bytes().first()? {
        b'L' => {
            let end = rest.find(';')?;
            (class_name(&rest[..=end]), &rest[end + 1..])
        }
        &b => {
            let primitive = match b {
                b'B' => "byte",
                b'C' => "char",
                b'D' => "double",
                b'F' => "float",
                b'I' => "int",
                b'J' => "long",
                b'S' => "short",
                b'Z' => "boolean",
                _ => return None,
            };
            (primitive.to_string(), &rest[1..])
        }
    };
    Some((element + &"[]".repeat(dimensions), after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_methods_as_hotspot_does() {
        let names = MethodNames::new(
            "Ljava/util/zip/GZIPOutputStream;",
            "<init>",
            "(Ljava/io/OutputStream;)V",
        );
        assert_eq!(
            names.full,
            "void java.util.zip.GZIPOutputStream.<init>(java.io.OutputStream)"
        );
        assert_eq!(names.short, "java.util.zip.GZIPOutputStream.<init>");
        assert_eq!(
            MethodNames::new("Ljava/util/zip/Deflater;", "init", "(IIZ)J").full,
            "long java.util.zip.Deflater.init(int, int, boolean)"
        );
        assert_eq!(
            MethodNames::new(
                "Ljava/util/concurrent/ConcurrentHashMap;",
                "tabAt",
                "([Ljava/util/concurrent/ConcurrentHashMap$Node;I)Ljava/util/concurrent/ConcurrentHashMap$Node;"
            )
            .full,
            "java.util.concurrent.ConcurrentHashMap$Node \
             java.util.concurrent.ConcurrentHashMap.tabAt(java.util.concurrent.ConcurrentHashMap$Node[], int)"
        );
        assert_eq!(
            MethodNames::new("Ljava/lang/String;", "value", "()[B").full,
            "byte[] java.lang.String.value()"
        );
        assert_eq!(
            MethodNames::new("LGzipLogger;", "main", "([Ljava/lang/String;)V").full,
            "void GzipLogger.main(java.lang.String[])"
        );
    }

    #[test]
    fn writes_hidden_classes_as_hotspot_does() {
        let names = MethodNames::new(
            "Ljava/lang/invoke/LambdaForm$MH.0x0000000800c0c400;",
            "invoke",
            "(Ljava/lang/Object;I)Ljava/lang/Object;",
        );
        assert_eq!(
            names.full,
            "java.lang.Object java.lang.invoke.LambdaForm$MH/0x0000000800c0c400.invoke(java.lang.Object, int)"
        );
    }

    #[test]
    fn keeps_what_does_not_parse() {
        for bad in [
            "",
            "V",
            "(",
            "(I",
            "(Q)V",
            "(I)",
            "(I)VV",
            "([)V",
            "(Ljava/lang/String)V",
        ] {
            assert_eq!(method_types(bad), None, "{bad}");
            assert_eq!(MethodNames::new("LA;", "m", bad).full, "A.m", "{bad}");
        }
        assert_eq!(class_name("weird"), "weird");
    }
}
