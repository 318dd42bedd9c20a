;; init_order: exports _initialize, _start and wapc_init, each appending one letter ("i", "s",
;; "w") to a buffer; every call answers the buffer. A host that calls them in the order of
;; docs/runtime.md, once each, makes this answer "isw".
(module
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))

  (memory (export "memory") 1)
  (global $len (mut i32) (i32.const 0))   ;; letters in the buffer at address 1024

  (func $append (param $letter i32)
    (i32.store8 (i32.add (i32.const 1024) (global.get $len)) (local.get $letter))
    (global.set $len (i32.add (global.get $len) (i32.const 1))))

  (func (export "_initialize") (call $append (i32.const 0x69)))  ;; "i"
  (func (export "_start") (call $append (i32.const 0x73)))       ;; "s"
  (func (export "wapc_init") (call $append (i32.const 0x77)))    ;; "w"

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (call $guest_response (i32.const 1024) (global.get $len))
    (i32.const 1))
)
