;; table_grow: every call grows its funcref table by 16M elements (16,777,216), then by 48M
;; more, and answers what each table.grow returned, as two little-endian i32 (the old size,
;; or -1 when the host refused to grow). Unbounded, the two grows take 512 MiB of host memory.
(module
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (i32.store (i32.const 0) (table.grow $t (ref.null func) (i32.const 0x1000000)))
    (i32.store (i32.const 4) (table.grow $t (ref.null func) (i32.const 0x3000000)))
    (call $guest_response (i32.const 0) (i32.const 8))
    (i32.const 1))
)
