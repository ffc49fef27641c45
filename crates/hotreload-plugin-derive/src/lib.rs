//! `#[derive(State)]` for `hotreload-plugin`: writes a `#[repr(C)]`
//! struct's shape (each field's name, offset and type) for the host's
//! schema, and refuses at compile time what no schema can describe: a
//! struct without `#[repr(C)]` (Rust may reorder its fields between two
//! builds), generics, tuple structs, enums and unions, and fields that hold
//! references, pointers or heap data. Field types are checked by the
//! `StateField` trait, whose message names the type that cannot be used.
//!
//! Field attributes: `#[state(transient)]` (zeroed on every reload) and
//! `#[state(text)]` (a byte array shown as a string).

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{Data, DeriveInput, Error, Fields, Type, parse_macro_input, spanned::Spanned};

#[proc_macro_derive(State, attributes(state))]
pub fn derive_state(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> Result<proc_macro2::TokenStream, Error> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "#[derive(State)]: a state type cannot be generic (the host sees one layout per build)",
        ));
    }
    check_repr_c(input)?;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            _ => {
                return Err(Error::new(
                    name.span(),
                    "#[derive(State)]: expected a struct with named fields (the names are the schema's), found a tuple or unit struct",
                ));
            }
        },
        _ => {
            return Err(Error::new(
                name.span(),
                "#[derive(State)]: expected a struct, found an enum or union (the schema describes numbers, bools, arrays and structs)",
            ));
        }
    };
    let mut members = Vec::new();
    for field in fields {
        let Some(ident) = &field.ident else { continue };
        refuse_type(&field.ty)?;
        let (transient, text) = field_flags(field)?;
        let ty = &field.ty;
        let label = ident.to_string();
        let label = label.strip_prefix("r#").unwrap_or(&label).to_owned();
        members.push(quote! {
            ::hotreload_plugin::__private::Member {
                name: #label,
                offset: ::core::mem::offset_of!(#name, #ident),
                shape: &<#ty as ::hotreload_plugin::__private::StateField>::SHAPE,
                transient: #transient,
                text: #text,
            }
        });
    }
    Ok(quote! {
        // In a block of its own, so that a crate that denies `unsafe_code`
        // for its own code can still derive (the glue is this crate's).
        #[allow(unsafe_code)]
        const _: () = {
            // SAFETY: the shape lists every named field of this #[repr(C)]
            // struct at its offset, each of a type that is itself a
            // `StateField`: numbers, bools, arrays and derived structs,
            // valid for every byte pattern the host writes.
            unsafe impl ::hotreload_plugin::__private::StateField for #name {
                const SHAPE: ::hotreload_plugin::__private::Shape =
                    ::hotreload_plugin::__private::Shape::Struct {
                        size: ::core::mem::size_of::<#name>(),
                        members: &[#(#members),*],
                    };
            }
            // SAFETY: the hash is the crate's own, of the shape above.
            unsafe impl ::hotreload_plugin::__private::State for #name {
                const LAYOUT_HASH: u64 = ::hotreload_plugin::__private::layout_hash::<#name>();
            }
        };
        // Evaluated here, so that a shape no schema can hold is an error
        // at this type, not at the export.
        const _: u64 = <#name as ::hotreload_plugin::__private::State>::LAYOUT_HASH;
    })
}

fn check_repr_c(input: &DeriveInput) -> Result<(), Error> {
    let mut c = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") {
                c = true;
            } else if meta.path.is_ident("align") {
                // `#[repr(C, align(N))]`: the value is read by the compiler.
                let content;
                syn::parenthesized!(content in meta.input);
                let _: syn::LitInt = content.parse()?;
            } else if meta.path.is_ident("packed") {
                return Err(meta.error(
                    "#[derive(State)]: a packed state cannot be used (its fields may be unaligned); drop `packed`",
                ));
            }
            Ok(())
        })?;
    }
    if c {
        Ok(())
    } else {
        Err(Error::new(
            input.ident.span(),
            "#[derive(State)]: expected #[repr(C)] on the struct: without it Rust may order the fields differently in the next build, and the host would read the old bytes as the wrong fields",
        ))
    }
}

/// Types that can never be in a state, named with the reason (others that
/// cannot are caught by the `StateField` bound, with its message).
fn refuse_type(ty: &Type) -> Result<(), Error> {
    let why = match ty {
        Type::Reference(_) => Some("a reference (it would point into memory the host does not own)"),
        Type::Ptr(_) => Some(
            "a pointer (it would dangle after a reload; store an index or a copy instead)",
        ),
        Type::FnPtr(_) => Some("a function pointer (it points into the old library after a reload)"),
        Type::Slice(_) | Type::TraitObject(_) | Type::ImplTrait(_) => {
            Some("a type without a fixed size")
        }
        Type::Tuple(t) if !t.elems.is_empty() => {
            Some("a tuple (its layout is Rust's to choose; use a #[repr(C)] struct)")
        }
        Type::Array(a) => return refuse_type(&a.elem),
        Type::Paren(p) => return refuse_type(&p.elem),
        Type::Group(g) => return refuse_type(&g.elem),
        Type::Path(p) => p.path.segments.last().and_then(|last| {
            match last.ident.to_string().as_str() {
                "String" | "Vec" | "Box" | "Rc" | "Arc" | "HashMap" | "BTreeMap" | "VecDeque"
                | "CString" | "PathBuf" | "OsString" => Some(
                    "heap data (the host copies the state's bytes; the heap it points to would not survive a reload)",
                ),
                "char" => Some("a Rust `char` (not every u32 is one; use u32 or u8 with #[state(text)])"),
                "Option" | "Result" | "Cell" | "RefCell" => Some(
                    "a Rust enum or wrapper whose layout the schema cannot describe",
                ),
                _ => None,
            }
        }),
        _ => None,
    };
    match why {
        Some(why) => Err(Error::new(
            ty.span(),
            format!("#[derive(State)]: this field cannot be in a hot-reloaded state: {why}"),
        )),
        None => Ok(()),
    }
}

fn field_flags(field: &syn::Field) -> Result<(bool, bool), Error> {
    let (mut transient, mut text) = (false, false);
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("state")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("transient") {
                transient = true;
                Ok(())
            } else if meta.path.is_ident("text") {
                text = true;
                Ok(())
            } else {
                Err(meta.error("#[state(...)]: expected `transient` or `text`"))
            }
        })?;
    }
    if text && !matches!(&field.ty, Type::Array(_)) {
        return Err(Error::new(
            Span::call_site(),
            "#[state(text)]: expected a byte array ([u8; N] or [i8; N])",
        ));
    }
    Ok((transient, text))
}
