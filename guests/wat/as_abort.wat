;; as_abort: an AssemblyScript module built without `--use abort=...` imports
;; env.abort(message, file, line, column), whose strings are AssemblyScript's: UTF-16LE, their
;; byte length in the u32 just before the pointer. The payload's first byte says how it aborts:
;;   "m": abort("x must be ≥ 0", "assembly/index.ts", 12, 7)
;;   "n": abort(null, null, 3, 4)
;;   "b": the message pointer is out of memory (0xFFFFFFF0)
;;   "l": the message's byte length (at ptr - 4) runs past the end of memory
;; anything else answers "ok".
(module
  (import "env" "abort" (func $abort (param i32 i32 i32 i32)))
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (memory (export "memory") 1)
  ;; 0x100: length of the message, 0x104: the message (UTF-16LE)
  (data (i32.const 0x100) "\1a\00\00\00\78\00\20\00\6d\00\75\00\73\00\74\00\20\00\62\00\65\00\20\00\65\22\20\00\30\00")
  ;; 0x200: length of the file name, 0x204: the file name
  (data (i32.const 0x200) "\22\00\00\00\61\00\73\00\73\00\65\00\6d\00\62\00\6c\00\79\00\2f\00\69\00\6e\00\64\00\65\00\78\00\2e\00\74\00\73\00")
  ;; 0x300: a length that runs past the end of the 64 KiB memory, 0x304: its "string"
  (data (i32.const 0x300) "\00\00\01\00")
  (data (i32.const 0x400) "ok")
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $how i32)
    (call $guest_request (i32.const 0x800) (i32.const 0x1000))
    (local.set $how (i32.load8_u (i32.const 0x1000)))
    (if (i32.eq (local.get $how) (i32.const 0x6d))  ;; "m"
      (then (call $abort (i32.const 0x104) (i32.const 0x204) (i32.const 12) (i32.const 7))))
    (if (i32.eq (local.get $how) (i32.const 0x6e))  ;; "n"
      (then (call $abort (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 4))))
    (if (i32.eq (local.get $how) (i32.const 0x62))  ;; "b"
      (then (call $abort (i32.const 0xFFFFFFF0) (i32.const 0x204) (i32.const 1) (i32.const 1))))
    (if (i32.eq (local.get $how) (i32.const 0x6c))  ;; "l"
      (then (call $abort (i32.const 0x304) (i32.const 0x204) (i32.const 1) (i32.const 1))))
    (call $guest_response (i32.const 0x400) (i32.const 2))
    (i32.const 1))
)
