//! Escaping text for markup: what the SVG and HTML outputs (and `tally leaks --html`) put
//! between tags and in attribute values. The lowest of the render modules: it uses none of them.

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, control characters replaced: safe in text
/// and in attribute values, of HTML and of XML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b>&\"c'\n"), "a&lt;b&gt;&amp;&quot;c&#39; ");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }
}
