# embed_text.cmake — writes a C file defining `const char SYMBOL[]` with the bytes of file IN
# (NUL-terminated), so a text file can travel inside a binary without a path to find it.
#   cmake -DIN=file -DOUT=file.c -DSYMBOL=name -P embed_text.cmake
# Bytes are written as hex initializers: no escaping rules to get wrong, any content works.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)"
       "\\1\n" bytes "${bytes}")
get_filename_component(name "${IN}" NAME)
file(WRITE "${OUT}.tmp" "/* Generated from ${name} by cmake/embed_text.cmake. Do not edit. */\n"
     "const char ${SYMBOL}[] = {\n${bytes}0x00};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
