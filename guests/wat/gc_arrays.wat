;; gc_arrays: uses the wasm GC proposal: every call allocates 400 GC arrays of 1 MiB and keeps
;; them in a global, 400 MiB outside linear memory. The host's engine has wasm GC off (its heap
;; would be a second budget beside --max-memory), so a deploy refuses it.
(module
  (type $bytes (array (mut i8)))
  (type $arrays (array (mut (ref null $bytes))))
  (global $keep (mut (ref null $arrays)) (ref.null $arrays))
  (memory (export "memory") 1)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $i i32)
    (global.set $keep (array.new_default $arrays (i32.const 400)))
    (loop $more
      (array.set $arrays (global.get $keep) (local.get $i)
        (array.new $bytes (i32.const 1) (i32.const 1048576)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 400))))
    (i32.const 1))
)
