;; hostcall: a generic host call. The payload is
;;   binding NUL namespace NUL operation NUL body
;; (three NUL separators; the body, after the third, may contain anything, NULs included).
;; Every call performs that host call and answers the host's response; if the host call fails,
;; the guest error is exactly the host's error text. Memory layout as in echo.wat.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))

  (memory (export "memory") 2)

  (data (i32.const 64) "out of memory")          ;; 13 bytes
  (data (i32.const 96) "operation name too long") ;; 23 bytes
  ;; 70 bytes
  (data (i32.const 128) "hostcall: payload must be binding NUL namespace NUL operation NUL body")

  ;; $ensure (grow memory to cover an address), $fail (set a guest error): as in echo.wat.
  (func $ensure (param $end i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.add (i32.shr_u (local.get $end) (i32.const 16))
               (i32.ne (i32.and (local.get $end) (i32.const 0xffff)) (i32.const 0))))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 1))

  (func $fail (param $ptr i32) (param $len i32) (result i32)
    (call $guest_error (local.get $ptr) (local.get $len))
    (i32.const 0))

  ;; After __host_call returned $ok: copy the host response (or error) to $at and answer it.
  (func $answer_host (param $ok i32) (param $at i32) (result i32)
    (local $len i32)
    (if (local.get $ok)
      (then
        (local.set $len (call $host_response_len))
        (if (i32.eqz (call $ensure (i32.add (local.get $at) (local.get $len))))
          (then (return (call $fail (i32.const 64) (i32.const 13)))))
        (call $host_response (local.get $at))
        (call $guest_response (local.get $at) (local.get $len))
        (return (i32.const 1))))
    (local.set $len (call $host_error_len))
    (if (i32.eqz (call $ensure (i32.add (local.get $at) (local.get $len))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $host_error (local.get $at))
    (call $fail (local.get $at) (local.get $len)))

  ;; Address of the first NUL byte in [$p, $end), or -1.
  (func $find_nul (param $p i32) (param $end i32) (result i32)
    (block $none
      (loop $next
        (br_if $none (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eqz (i32.load8_u (local.get $p))) (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (i32.const -1))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $end i32) (local $nul1 i32) (local $nul2 i32) (local $nul3 i32)
    (if (i32.gt_u (local.get $op_len) (i32.const 64512))
      (then (return (call $fail (i32.const 96) (i32.const 23)))))
    (local.set $end (i32.add (i32.const 65536) (local.get $msg_len)))
    (if (i32.eqz (call $ensure (local.get $end)))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))

    (block $bad
      (local.set $nul1 (call $find_nul (i32.const 65536) (local.get $end)))
      (br_if $bad (i32.eq (local.get $nul1) (i32.const -1)))
      (local.set $nul2 (call $find_nul (i32.add (local.get $nul1) (i32.const 1)) (local.get $end)))
      (br_if $bad (i32.eq (local.get $nul2) (i32.const -1)))
      (local.set $nul3 (call $find_nul (i32.add (local.get $nul2) (i32.const 1)) (local.get $end)))
      (br_if $bad (i32.eq (local.get $nul3) (i32.const -1)))
      (return
        (call $answer_host
          (call $host_call
            (i32.const 65536)
            (i32.sub (local.get $nul1) (i32.const 65536))
            (i32.add (local.get $nul1) (i32.const 1))
            (i32.sub (local.get $nul2) (i32.add (local.get $nul1) (i32.const 1)))
            (i32.add (local.get $nul2) (i32.const 1))
            (i32.sub (local.get $nul3) (i32.add (local.get $nul2) (i32.const 1)))
            (i32.add (local.get $nul3) (i32.const 1))
            (i32.sub (local.get $end) (i32.add (local.get $nul3) (i32.const 1))))
          (local.get $end))))
    (call $fail (i32.const 128) (i32.const 70)))
)
